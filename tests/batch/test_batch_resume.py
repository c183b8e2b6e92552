"""``kill -9`` in the middle of ``dcif fuse-batch``, then the same command again: a complete, valid result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import pydicom

from pipeline.batch import BatchOptions
from pipeline.batch.layout import DONE_FILE

REPO_ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_S = 300.0  # imports alone take several seconds on a busy 2-core machine


def _command(in_dir: Path, out_dir: Path, options: BatchOptions) -> list[str]:
    return [sys.executable, "-m", "pipeline.cli", "-q", "fuse-batch", str(in_dir), str(out_dir),
            "--method", ",".join(options.methods), "--window", ",".join(options.windows),
            "--metric-slices", str(options.metric_slices)]


def _done(out_dir: Path) -> set[str]:
    return {path.parent.name for path in out_dir.glob(f"*/{DONE_FILE}")}


def _kill_mid_batch(command: list[str], out_dir: Path, n_studies: int) -> set[str]:
    """Start the batch and SIGKILL it once a study is done and the next one is being written, or at the
    latest when all but one are done; returns the studies done at that moment."""
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    try:
        while time.monotonic() < deadline and process.poll() is None:
            done = _done(out_dir)
            folders = {path.name for path in out_dir.iterdir() if path.is_dir()} if out_dir.is_dir() else set()
            if (done and folders - done) or len(done) >= n_studies - 1:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
                return done
            time.sleep(0.005)
        raise AssertionError("the batch finished or stalled before it could be killed mid-run")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_killed_batch_resumes_to_a_complete_identical_result(tmp_path: Path, good_export: Path, reference_run: Path,
                                                             batch_options: BatchOptions, fused_files) -> None:
    n_studies = len(list(good_export.iterdir()))
    command = _command(good_export, tmp_path, batch_options)
    done_before = _kill_mid_batch(command, tmp_path, n_studies)
    assert 1 <= len(done_before) < n_studies

    rerun = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=STARTUP_TIMEOUT_S)

    assert rerun.returncode == 0, rerun.stderr
    rows = json.loads((tmp_path / "report.json").read_text())["studies"]
    status = {row["key"]: row["status"] for row in rows}
    assert {key for key, value in status.items() if value == "skipped"} == done_before
    assert {key for key, value in status.items() if value == "ok"} == set(status) - done_before
    assert _done(tmp_path) == set(status) and len(status) == n_studies
    assert [path for path in tmp_path.rglob("*") if ".partial." in path.name] == []
    assert fused_files(tmp_path) == fused_files(reference_run)
    for key in status:
        assert nib.load(tmp_path / key / "fused_laplacian_lung.nii.gz").get_fdata().shape == (64, 64, 16)
        assert pydicom.dcmread(tmp_path / key / "dicom_laplacian_lung" / "fused.dcm").NumberOfFrames == 16
