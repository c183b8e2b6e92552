"""The batch job end to end on tiny phantom exports: outputs, report, broken studies, determinism, safety."""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from pipeline.batch import BatchOptions, run_batch
from pipeline.batch.layout import DONE_FILE, PREVIEW_FILE
from pipeline.cli import main
from pipeline.errors import InputError
from pipeline.io.discovery import discover_studies
from pipeline.metrics import METRIC_NAMES

N_GOOD = 3  # studies in the good_export fixture


def _rows(out: Path) -> list[dict]:
    return json.loads((out / "report.json").read_text())["studies"]


def test_batch_writes_every_output_of_every_study(tmp_path: Path, good_export: Path) -> None:
    options = BatchOptions(methods=("laplacian", "average"), windows=("lung", "mediastinal"), metric_slices=4)
    report = run_batch(good_export, tmp_path, options, progress=False)

    assert report.counts() == {"ok": N_GOOD, "failed": 0, "skipped": 0}
    for row in _rows(tmp_path):
        folder = tmp_path / row["key"]
        assert set(row["timings"]) == {"discover", "load", "suv", "resample", "window", "fuse", "metrics", "write"}
        assert row["slices"] == 16 and row["location"].startswith("#") and "patient" not in row["location"]
        for method in options.methods:
            for window in options.windows:
                assert set(row["metrics"][f"{method}_{window}"]) == set(METRIC_NAMES)
                fused = nib.load(folder / f"fused_{method}_{window}.nii.gz").get_fdata()
                assert fused.shape == (64, 64, 16) and 0.0 <= fused.min() and fused.max() <= 1.0
                for kind, description in (("dicom", ""), ("colour", " PET colour")):
                    derived = pydicom.dcmread(folder / f"{kind}_{method}_{window}" / "fused.dcm")
                    assert derived.NumberOfFrames == 16
                    assert derived.SeriesDescription == f"DCIF fusion {method} {window}{description}"
        assert (folder / PREVIEW_FILE).read_bytes().startswith(b"\x89PNG")
        assert json.loads((folder / DONE_FILE).read_text())["status"] == "ok"
    with (tmp_path / "report.csv").open() as stream:
        table = list(csv.DictReader(stream))
    assert [line["key"] for line in table] == [row["key"] for row in _rows(tmp_path)]
    assert float(table[0]["laplacian_lung_SSIM"]) > 0


def test_broken_studies_are_reported_and_the_batch_goes_on(tmp_path: Path, mixed_export: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    status = main(["-q", "fuse-batch", str(mixed_export), str(tmp_path), "--method", "laplacian",
                   "--window", "lung", "--metric-slices", "4", "--report-paths"])

    assert status == 1
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert summary.startswith(f"fuse-batch: {N_GOOD} ok, 4 failed, 0 skipped")
    rows = _rows(tmp_path)
    failed = {row["location"].split("/")[0]: row["reason"] for row in rows if row["status"] == "failed"}
    assert set(failed) == {"truncated", "no_pet", "other_frame", "corrupt_pixels"}
    assert "no PET" in failed["no_pet"]
    assert "FrameOfReferenceUID" in failed["other_frame"]
    # A study that discovery fails has its key, as its reason says ("study KEY: ..."), for the report's key column.
    keyed = {row["location"].split("/")[0]: row["key"] for row in rows if row["status"] == "failed"}
    for name in ("no_pet", "other_frame"):
        assert keyed[name] and failed[name].startswith(f"study {keyed[name]}")
    assert "pixel data" in failed["truncated"] and "pixel data" in failed["corrupt_pixels"]
    assert all("\n" not in reason and str(mixed_export) not in reason for reason in failed.values())
    ok = [row["key"] for row in rows if row["status"] == "ok"]
    assert len(ok) == N_GOOD
    # Only finished studies have a folder: failed ones leave nothing behind.
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == sorted(ok)


def test_rerun_writes_byte_identical_outputs(tmp_path: Path, good_export: Path, reference_run: Path,
                                             batch_options: BatchOptions, fused_files) -> None:
    run_batch(good_export, tmp_path, batch_options, progress=False)

    again, reference = fused_files(tmp_path), fused_files(reference_run)
    assert any(name.endswith(".nii.gz") for name in reference)
    assert again.keys() == reference.keys()
    assert [name for name in again if again[name] != reference[name]] == []


def test_finished_studies_are_skipped_with_their_results(tmp_path: Path, good_export: Path, reference_run: Path,
                                                         batch_options: BatchOptions) -> None:
    out = tmp_path / "out"
    shutil.copytree(reference_run, out)
    report = run_batch(good_export, out, batch_options, progress=False)

    assert report.counts() == {"ok": 0, "failed": 0, "skipped": N_GOOD}
    before = {row["key"]: row["metrics"] for row in _rows(reference_run)}
    assert {row["key"]: row["metrics"] for row in _rows(out)} == before
    assert {row["reason"] for row in _rows(out)} == {"done (finished by an earlier run)"}



def test_a_finished_study_made_with_other_settings_is_redone(tmp_path: Path, good_export: Path, reference_run: Path,
                                                             batch_options: BatchOptions, caplog) -> None:
    out = tmp_path / "out"
    shutil.copytree(reference_run, out)
    report = run_batch(good_export, out, replace(batch_options, methods=("average",)), progress=False)
    assert report.counts() == {"ok": N_GOOD, "failed": 0, "skipped": 0}
    assert "finished with other settings" in caplog.text
    assert len(list(out.glob("*/fused_average_lung.nii.gz"))) == N_GOOD
    assert all(row["made_with"]["methods"] == {"average": "no weights"} for row in _rows(out))
    again = run_batch(good_export, out, replace(batch_options, methods=("average",)), progress=False)
    assert again.counts()["skipped"] == N_GOOD


def test_a_finished_study_scored_on_other_slices_is_redone(tmp_path: Path, good_export: Path, reference_run: Path,
                                                          batch_options: BatchOptions) -> None:
    """A rerun with another --metric-slices skipped the finished studies, so their reports kept the old scores."""
    out = tmp_path / "out"
    shutil.copytree(reference_run, out)
    report = run_batch(good_export, out, replace(batch_options, metric_slices=2), progress=False)
    assert report.counts() == {"ok": N_GOOD, "failed": 0, "skipped": 0}
    assert {row["made_with"]["metric_slices"] for row in _rows(out)} == {2}


def test_a_done_json_predating_a_recorded_setting_is_taken_as_made_with_this_runs(
        tmp_path: Path, good_export: Path, reference_run: Path, batch_options: BatchOptions) -> None:
    """Recording a new setting must not redo every study an earlier version finished."""
    out = tmp_path / "out"
    shutil.copytree(reference_run, out)
    for done in out.glob(f"*/{DONE_FILE}"):
        record = json.loads(done.read_text())
        del record["made_with"]["metric_slices"], record["made_with"]["pet_header"]
        done.write_text(json.dumps(record))
    assert run_batch(good_export, out, batch_options, progress=False).counts()["skipped"] == N_GOOD


def test_a_study_that_now_fails_discovery_keeps_only_finished_outputs(tmp_path: Path, good_export: Path,
                                                                     reference_run: Path,
                                                                     batch_options: BatchOptions) -> None:
    """A run killed before a study's done.json, then that study exported again without its PET: its half outputs
    stayed, where a fused_*.nii.gz glob took them for a result. A study a previous run finished keeps its outputs."""
    export, out = tmp_path / "export", tmp_path / "out"
    shutil.copytree(good_export, export)
    shutil.copytree(reference_run, out)
    keys = {pair.ct.folder.parts[-3]: pair.study_key for pair in discover_studies(export).pairs}
    interrupted, finished = keys["patient_0"], keys["patient_1"]
    (out / interrupted / DONE_FILE).unlink()
    for name in ("patient_0", "patient_1"):
        shutil.rmtree(export / name / "dicom" / "PET")

    report = run_batch(export, out, batch_options, progress=False)

    assert report.counts() == {"ok": 0, "failed": 2, "skipped": N_GOOD - 2}
    reasons = {row["key"]: row["reason"] for row in _rows(out)}
    assert "no PET" in reasons[interrupted] and not (out / interrupted).exists()
    assert reasons[finished].endswith("; the outputs a previous run finished are kept")
    assert (out / finished / DONE_FILE).exists() and list((out / finished).glob("fused_*.nii.gz"))


def _fused_uids(out: Path) -> set[str]:
    """The SeriesInstanceUIDs and SOPInstanceUIDs of every derived object under ``out``."""
    headers = [pydicom.dcmread(path, stop_before_pixels=True) for path in out.rglob("fused.dcm")]
    return {uid for ds in headers for uid in (ds.SeriesInstanceUID, ds.SOPInstanceUID)}


def test_a_finished_study_exported_again_with_other_slices_is_redone(tmp_path: Path, good_export: Path,
                                                                     batch_options: BatchOptions, caplog) -> None:
    """A study fused from part of its CT, then exported whole: its done.json from the part was taken as finished."""
    export, held = tmp_path / "export", tmp_path / "held"
    shutil.copytree(good_export / "patient_0", export / "patient_0")
    held.mkdir()
    ct = export / "patient_0" / "dicom" / "CT"
    for path in sorted(ct.iterdir())[-6:]:
        shutil.move(path, held / path.name)
    out = tmp_path / "out"
    assert run_batch(export, out, batch_options, progress=False).counts()["ok"] == 1
    assert [row["slices"] for row in _rows(out)] == [10]
    part = _fused_uids(out)
    for path in held.iterdir():
        shutil.move(path, ct / path.name)

    report = run_batch(export, out, batch_options, progress=False)

    assert report.counts() == {"ok": 1, "failed": 0, "skipped": 0}
    assert "finished with other input files" in caplog.text
    assert [row["slices"] for row in _rows(out)] == [16]
    (fused,) = out.glob("*/fused_laplacian_lung.nii.gz")
    assert nib.load(fused).shape[2] == 16
    whole = _fused_uids(out)  # other content, other UIDs: a PACS that never overwrites kept the part's series
    assert len(whole) == len(part) == 4 and whole.isdisjoint(part)
    assert run_batch(export, out, batch_options, progress=False).counts()["skipped"] == 1


def test_a_finished_study_whose_pet_weight_was_corrected_in_place_is_redone(tmp_path: Path, good_export: Path,
                                                                          batch_options: BatchOptions, caplog) -> None:
    """A PACS corrects a patient's weight in place, keeping every UID: the rerun skipped the study and kept its SUV
    from the wrong weight."""
    export = tmp_path / "export"
    shutil.copytree(good_export / "patient_0", export / "patient_0")
    out = tmp_path / "out"
    assert run_batch(export, out, batch_options, progress=False).counts()["ok"] == 1
    before = _fused_uids(out)
    for path in (export / "patient_0" / "dicom" / "PET").iterdir():
        ds = pydicom.dcmread(path)
        ds.PatientWeight = str(2 * float(ds.PatientWeight))
        ds.save_as(path)

    report = run_batch(export, out, batch_options, progress=False)

    assert report.counts() == {"ok": 1, "failed": 0, "skipped": 0}
    assert "finished with other PET header values" in caplog.text
    assert _fused_uids(out).isdisjoint(before)  # other SUV, other pixels: other UIDs
    assert run_batch(export, out, batch_options, progress=False).counts()["skipped"] == 1


def test_skipped_studies_are_named_as_this_run_names_inputs(tmp_path: Path, good_export: Path,
                                                            batch_options: BatchOptions) -> None:
    """A run with real paths (--report-paths) then one without: the second's report holds pseudonyms only."""
    out = tmp_path / "out"
    run_batch(good_export, out, batch_options, progress=False, explicit_paths=True)
    assert all(not row["location"].startswith("#") for row in _rows(out))
    run_batch(good_export, out, batch_options, progress=False)
    assert {row["status"] for row in _rows(out)} == {"skipped"}
    assert all(row["location"].startswith("#") for row in _rows(out))


def test_hostile_patient_tags_stay_out_of_paths_and_report(tmp_path: Path, good_export: Path,
                                                           batch_options: BatchOptions, rewrite_tags) -> None:
    export = tmp_path / "export"
    shutil.copytree(good_export / "patient_0", export / "patient_0")
    rewrite_tags(sorted(export.rglob("*.dcm")), PatientID="../../etc", PatientName="../../../EVIL^NAME",
            PatientBirthDate="19450102")
    out = tmp_path / "deep" / "out"
    report = run_batch(export, out, batch_options, progress=False)

    assert report.counts()["ok"] == 1
    assert not (tmp_path / "etc").exists() and not (tmp_path / "deep" / "etc").exists()
    for path in out.rglob("*"):
        assert path.resolve().is_relative_to(out.resolve())
        assert "etc" not in path.name and "EVIL" not in path.name
    for name in ("report.json", "report.csv"):
        text = (out / name).read_text()
        assert "EVIL" not in text and "../../etc" not in text and "19450102" not in text
    derived = pydicom.dcmread(next(out.rglob("fused.dcm")))
    # PACS files the fused series under the same patient, whose birth date it shows beside the name, as the CT's
    assert (derived.PatientID, derived.PatientBirthDate) == ("../../etc", "19450102")


def test_bad_arguments_fail_in_one_line_before_any_work(tmp_path: Path, good_export: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    assert main(["-q", "fuse-batch", str(good_export), str(tmp_path / "a"), "--window", "bone,lung"]) == 2
    assert main(["-q", "fuse-batch", str(good_export), str(tmp_path / "b"), "--method", "magic"]) == 2
    assert main(["-q", "fuse-batch", str(good_export), str(good_export / "out")]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and all(line.startswith("dcif fuse-batch: error:") for line in errors)
    assert "bone" in errors[0] and "magic" in errors[1] and "inside IN_DIR" in errors[2]
    assert not (tmp_path / "a").exists() and not (good_export / "out").exists()
    with pytest.raises(SystemExit):
        main(["fuse-batch", str(good_export), str(tmp_path), "--workers", "0"])



def test_a_named_checkpoint_or_the_models_scaling_is_checked_before_any_work(tmp_path: Path, good_export: Path,
                                                                           capsys: pytest.CaptureFixture) -> None:
    # A mistyped --checkpoint asks for the model: it fails, rather than fusing with a baseline under its name.
    assert main(["-q", "fuse-batch", str(good_export), str(tmp_path / "a"),
                 "--checkpoint", str(tmp_path / "no.pt")]) == 2
    # The shipped model was trained at the default SUV ceiling: another one fails at once, not in every study.
    assert main(["-q", "fuse-batch", str(good_export), str(tmp_path / "b"), "--method", "dcif_gan",
                 "--suv-max", "7.5"]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2 and all(line.startswith("dcif fuse-batch: error:") for line in errors)
    assert "no.pt" in errors[0] and "SUV ceiling" in errors[1] and "7.5" in errors[1]
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_baseline_needs_no_bundle(tmp_path: Path, good_export: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DCIF_GAN_BUNDLE", str(tmp_path / "no_bundle"))
    assert main(["-q", "fuse-batch", str(good_export), str(tmp_path / "out"), "--method", "average", "--window", "lung",
                 "--metric-slices", "1"]) == 0
    assert len(list((tmp_path / "out").rglob("fused_average_lung.nii.gz"))) == N_GOOD

def test_an_empty_folder_is_an_input_error(tmp_path: Path, batch_options: BatchOptions) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no DICOM files"):
        run_batch(tmp_path / "empty", tmp_path / "out", batch_options, progress=False)


def test_a_run_that_fails_to_start_leaves_no_output_folder_it_made(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    """An IN_DIR without DICOM files left OUT_DIR (and the folders above it that the run made) behind, holding
    ``.lock`` and ``.location-key``; a folder that was there keeps what it held."""
    (tmp_path / "empty").mkdir()
    assert main(["fuse-batch", str(tmp_path / "empty"), str(tmp_path / "new" / "out"), "-q"]) == 2
    assert capsys.readouterr().err == f"dcif fuse-batch: error: no DICOM files found under {tmp_path / 'empty'}\n"
    assert not (tmp_path / "new").exists()
    (tmp_path / "kept" / "study").mkdir(parents=True)
    assert main(["-q", "fuse-batch", str(tmp_path / "empty"), str(tmp_path / "kept" / "out")]) == 2
    assert main(["-q", "fuse-batch", str(tmp_path / "empty"), str(tmp_path / "kept")]) == 2
    assert sorted(path.name for path in (tmp_path / "kept").iterdir()) == [".location-key", ".lock", "study"]


def test_derived_series_values_match_the_nifti(reference_run: Path) -> None:
    folder = next(p for p in reference_run.iterdir() if p.is_dir())
    nifti = nib.load(folder / "fused_laplacian_lung.nii.gz").get_fdata()
    frames = pydicom.dcmread(folder / "dicom_laplacian_lung" / "fused.dcm").pixel_array  # (Z, rows, columns)
    stacked = frames.transpose(2, 1, 0) / 4095.0
    assert np.abs(stacked - nifti).max() <= 0.5 / 4095 + 1e-6


def test_each_dicom_file_is_read_in_full_once(tmp_path: Path, good_export: Path, monkeypatch) -> None:
    """Discovery scans the headers; the loader reads each file once, and the DICOM writer reuses those headers."""
    reads: dict[tuple[str, bool], int] = {}
    dcmread = pydicom.dcmread

    def counting(path, *args, stop_before_pixels=False, **kwargs):
        key = (str(path), bool(stop_before_pixels or kwargs.get("specific_tags")))
        reads[key] = reads.get(key, 0) + 1
        return dcmread(path, *args, stop_before_pixels=stop_before_pixels, **kwargs)

    monkeypatch.setattr(pydicom, "dcmread", counting)
    report = run_batch(good_export, tmp_path, BatchOptions(methods=("average",), windows=("lung",), metric_slices=2),
                       progress=False)
    assert report.counts()["ok"] == N_GOOD
    sources = {str(p) for p in good_export.rglob("*.dcm")}
    full = {path: n for (path, scan), n in reads.items() if not scan and path in sources}
    scans = {path: n for (path, scan), n in reads.items() if scan and path in sources}
    assert set(full) == set(scans) == sources
    assert set(full.values()) == {1} and set(scans.values()) == {1}
