"""Fault injection: hostile exports, planted identifiers, kill -9, concurrent runs, a full disk.

Each hostile input of the README's table is one study of one export, run as one batch, so the
whole list costs a single run of tiny phantoms. Kill trials run the real CLI in a subprocess.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pydicom
import pytest

from pipeline.batch import BatchOptions, run_batch
from pipeline.batch.layout import LOCK_FILE
from pipeline.cli import main
from pipeline.errors import DcifError

from .conftest import tiny_study

LATIN1 = os.fsdecode(b"M\xfcller")  # a folder name that is not valid UTF-8
CLI_OPTIONS = ["--method", "laplacian", "--window", "lung", "--metric-slices", "4"]


def _files(folder: Path, modality: str) -> list[Path]:
    return sorted((folder / modality).iterdir())


def _shift_pet(study: Path, _: Path, rewrite) -> None:
    for path in _files(study, "PET"):
        ds = pydicom.dcmread(path)
        ds.ImagePositionPatient = [*ds.ImagePositionPatient[:2], float(ds.ImagePositionPatient[2]) + 2000.0]
        ds.save_as(path)


def _share_uid(study: Path, _: Path, rewrite) -> None:
    other = tiny_study(study.parent / "twin", 31, {"size": (64, 64, 16), "spacing": (6.0, 6.0, 8.0)})
    uid = pydicom.dcmread(_files(study, "CT")[0]).StudyInstanceUID
    rewrite(list(other.rglob("*.dcm")), StudyInstanceUID=uid)


def _drop_ct_slice(study: Path, _: Path, rewrite) -> None:
    _files(study, "CT")[8].unlink()


def _pet_hole(study: Path, _: Path, rewrite) -> None:
    for path in _files(study, "PET")[12:18]:
        path.unlink()


def _truncate_pet(study: Path, _: Path, rewrite) -> None:
    path = _files(study, "PET")[15]
    path.write_bytes(path.read_bytes()[:300])


def _nan_slope(study: Path, _: Path, rewrite) -> None:
    rewrite(_files(study, "PET")[10:11], RescaleSlope="NaN")


def _zero_half_life(study: Path, _: Path, rewrite) -> None:
    for path in _files(study, "PET"):
        ds = pydicom.dcmread(path)
        ds.RadiopharmaceuticalInformationSequence[0].RadionuclideHalfLife = "0"
        ds.save_as(path)


def _huge_matrix(study: Path, _: Path, rewrite) -> None:
    rewrite(_files(study, "CT")[:1], Rows=65535, Columns=65535)


def _exported_twice(study: Path, root: Path, rewrite) -> None:
    shutil.copytree(study, root / "exported_twice_copy" / "dicom")


def _latin1_name(study: Path, _: Path, rewrite) -> None:
    study.parent.rename(study.parent.with_name(LATIN1))


# case -> (break the study, status, text its reason holds). The README's hostile-input table lists these.
HOSTILE = {
    "no_overlap": (_shift_pet, "failed", "does not overlap its CT"),
    "shared_uid": (_share_uid, "failed", "share one StudyInstanceUID: shared_uid/dicom and shared_uid/twin/dicom"),
    "missing_ct_slice": (_drop_ct_slice, "failed", "missing slices"),
    "pet_hole": (_pet_hole, "failed", "missing slices"),
    "truncated_pet": (_truncate_pet, "failed", "missing slices"),
    "nan_slope": (_nan_slope, "failed", "pet_0010.dcm: RescaleSlope 'NaN' is not a number"),
    "huge_matrix": (_huge_matrix, "failed", "65535x65535 pixels exceed"),
    "zero_half_life": (_zero_half_life, "failed",
                       "zero_half_life/dicom/PET: RadionuclideHalfLife 0.0 s must be a positive"),
    "exported_twice": (_exported_twice, "ok", ""),
    "latin1_name": (_latin1_name, "ok", ""),
}


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory: pytest.TempPathFactory, tiny_geometry: dict, rewrite_tags) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("hostile") / "export"
    for seed, (case, (breaks, _, _)) in enumerate(HOSTILE.items(), start=40):
        breaks(tiny_study(root / case, seed, tiny_geometry), root, rewrite_tags)
    out = root.parent / "out"
    status = main(["-q", "fuse-batch", str(root), str(out), *CLI_OPTIONS, "--report-paths"])
    report = json.loads((out / "report.json").read_text())
    return out, {"status": status, **report}


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_input_ends_in_a_clear_state(hostile_run: tuple[Path, dict], case: str) -> None:
    _, report = hostile_run
    name = LATIN1.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace") \
        if case == "latin1_name" else case
    rows = [row for row in report["studies"] if row["location"].split("/")[0] == name]
    _, status, reason = HOSTILE[case]
    assert [row["status"] for row in rows] == [status], rows
    assert reason in rows[0]["reason"] and "\n" not in rows[0]["reason"]
    assert report["status"] == 1


def test_duplicate_instances_are_kept_once_and_counted(hostile_run: tuple[Path, dict]) -> None:
    _, report = hostile_run
    row = next(row for row in report["studies"] if row["location"].startswith("exported_twice/"))
    assert row["duplicate_instances"] == 16 + 32  # every CT and PET file once more
    assert not any(row["location"].startswith("exported_twice_copy/") for row in report["studies"])


def test_truncated_file_is_listed_as_unreadable(hostile_run: tuple[Path, dict]) -> None:
    _, report = hostile_run
    assert any(issue["location"].startswith("truncated_pet/") for issue in report["unreadable_files"])


def test_planted_identifiers_reach_no_shared_file_nor_the_terminal(
        tmp_path: Path, planted_export: Path, identifiers_in, capsys: pytest.CaptureFixture) -> None:
    export = tmp_path / "export"
    shutil.copytree(planted_export, export)
    study = next(path.parent for path in export.rglob("CT"))
    patient_id = next((study / "CT").iterdir()).name.split("_")[0]  # file names start with it
    (study / "CT" / f"{patient_id}_notes.txt").write_text("not DICOM")  # an unreadable file, named in the report
    out = tmp_path / "out"

    assert main(["-q", "inspect", str(export)]) == 0
    assert main(["-q", "fuse-batch", str(export), str(out), *CLI_OPTIONS]) == 0
    terminal = capsys.readouterr()
    shared = {path.name for path in out.rglob("*") if path.is_file() and path.suffix != ".dcm"}
    assert shared >= {"report.json", "report.csv", "done.json"}
    assert identifiers_in(out, terminal.out, terminal.err) == []



@pytest.mark.parametrize("workers", ["1", "2"])
def test_warnings_name_inputs_by_pseudonyms_in_every_process(tmp_path: Path, planted_export: Path, identifiers_in,
                                                             capfd: pytest.CaptureFixture, caplog,
                                                             workers: str) -> None:
    """The loader's warnings quote the series' folder, which names the patient: in this process (whose log handlers
    are pytest's here) and in spawned workers (Python's last-resort handler, to the terminal)."""
    export = tmp_path / "export"
    shutil.copytree(planted_export, export)
    ct_files = sorted(next(export.rglob("CT")).iterdir())
    ds = pydicom.dcmread(ct_files[5])
    ds.ImagePositionPatient[2] = float(ds.ImagePositionPatient[2]) + 0.5  # uneven steps, not a gap: a warning
    ds.save_as(ct_files[5])
    assert main(["-q", "fuse-batch", str(export), str(tmp_path / "out"), *CLI_OPTIONS, "--workers", workers]) == 0
    terminal = capfd.readouterr()
    logged = terminal.err + caplog.text
    assert "uneven slice spacing" in logged
    assert identifiers_in(terminal.out, logged) == []

def test_a_second_run_on_a_held_output_folder_stops_at_once(tmp_path: Path, good_export: Path,
                                                            batch_options: BatchOptions,
                                                            capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "out").mkdir()
    with (tmp_path / "out" / LOCK_FILE).open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        start = time.monotonic()
        assert main(["-q", "fuse-batch", str(good_export), str(tmp_path / "out"), *CLI_OPTIONS]) == 2
        assert time.monotonic() - start < 10
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "another fuse-batch run" in error[0]
    assert [path.name for path in (tmp_path / "out").iterdir()] == [LOCK_FILE]


def test_unusable_output_folders_and_arguments_are_one_line(tmp_path: Path, good_export: Path,
                                                            capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "a_file").write_text("")
    assert main(["-q", "fuse-batch", str(good_export), str(tmp_path / "a_file"), *CLI_OPTIONS]) == 2
    for value in ("0", "nan", "-1", "inf"):
        assert main(["-q", "fuse-batch", str(good_export), str(tmp_path / "o"), *CLI_OPTIONS, "--suv-max", value]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 5 and "a_file" in errors[0] and all("--suv-max" in line for line in errors[1:])
    assert not (tmp_path / "o").exists()


def _children(pid: int) -> list[int]:
    """Every live descendant of ``pid``, from /proc (no psutil needed)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z":
            parents[int(entry.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        frontier = [child for child, parent in parents.items() if parent in frontier]
        found += frontier
    return found


def _alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _fuse_batch(in_dir: Path, out: Path, workers: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pipeline.cli", "-q", "fuse-batch", str(in_dir), str(out),
                             *CLI_OPTIONS, "--workers", str(workers)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to find the workers")
def test_kill_9_of_a_two_worker_batch_at_a_random_point_then_resume(tmp_path: Path, good_export: Path,
                                                                    reference_run: Path, fused_files) -> None:
    """The parent dies at a random point of its batch (workers starting or fusing): its workers go with it,
    and the next run, with one worker (test_batch_resume kills one of those), completes it identically."""
    out = tmp_path / "out"
    run = _fuse_batch(good_export, out, workers=2)
    try:
        deadline = time.monotonic() + 300
        while not out.is_dir() and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)  # the imports: several seconds before the batch takes its folder
        time.sleep(random.uniform(0.0, 16.0))  # two workers import, then fuse: about 20 s on 2 cores
        workers_seen = _children(run.pid)
        os.kill(run.pid, signal.SIGKILL)
        run.wait()
        deadline = time.monotonic() + 5
        while any(map(_alive, workers_seen)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in workers_seen if _alive(pid)], "workers outlived their killed parent"
    finally:
        for pid in _children(run.pid):
            os.kill(pid, signal.SIGKILL)
    assert _fuse_batch(good_export, out, workers=1).wait(timeout=300) == 0

    assert fused_files(out) == fused_files(reference_run)
    assert not [path for path in out.rglob("*") if ".partial." in path.name]


def test_ctrl_c_of_a_two_worker_batch_is_one_line_then_resumes(tmp_path: Path, good_export: Path,
                                                                reference_run: Path, fused_files) -> None:
    """Ctrl-C (SIGINT to the process group) while two workers fuse printed every process's traceback."""
    out = tmp_path / "out"
    # SIGINT's default action restored in the child: a shell runs background jobs (a CI step, say) with it ignored,
    # which Python and its children would inherit, and Ctrl-C would then do nothing at all.
    run = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "-q", "fuse-batch", str(good_export), str(out),
                            *CLI_OPTIONS, "--workers", "2"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           text=True, start_new_session=True,
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 300
    while not list(out.glob("*/")) and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # until a worker starts writing its study
    os.killpg(run.pid, signal.SIGINT)
    _, err = run.communicate(timeout=120)

    assert run.returncode == 130 and err.splitlines() == ["dcif fuse-batch: interrupted"]
    assert _fuse_batch(good_export, out, workers=1).wait(timeout=300) == 0
    assert fused_files(out) == fused_files(reference_run)


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 16 MiB tmpfs (root only); skipped where it cannot be mounted."""
    folder = tmp_path / "disk"
    folder.mkdir()
    if shutil.which("mount") is None or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(folder)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


def test_full_disk_fails_cleanly_and_resumes(small_disk: Path, good_export: Path, reference_run: Path,
                                             batch_options: BatchOptions, fused_files) -> None:
    filler = small_disk / "filler"
    with filler.open("wb") as stream:
        try:
            while True:
                stream.write(b"\0" * 65536)
        except OSError:
            pass
    out = small_disk / "out"
    with pytest.raises(DcifError, match="No space left on device") as failure:
        run_batch(good_export, out, batch_options, progress=False)
    assert "\n" not in str(failure.value)
    assert not [path for path in out.rglob("*") if ".partial." in path.name]
    filler.unlink()

    assert run_batch(good_export, out, batch_options, progress=False).counts()["ok"] == 3
    assert fused_files(out) == fused_files(reference_run)
