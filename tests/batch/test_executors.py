"""Every executor runs the same per-study job: parallel processes and Ray give the in-process run's outputs."""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from pipeline.batch import BatchOptions, LocalExecutor, RayExecutor, executors, make_executor, run_batch
from pipeline.batch.report import FAILED, OK, Locator
from pipeline.batch.task import StudyTask
from pipeline.errors import DcifError
from pipeline.io.discovery import StudyPair, discover_studies


def _statuses(out: Path) -> dict[str, str]:
    return {row["key"]: row["status"] for row in json.loads((out / "report.json").read_text())["studies"]}


def test_two_worker_processes_match_the_in_process_run(tmp_path: Path, good_export: Path, reference_run: Path,
                                                       batch_options: BatchOptions, fused_files) -> None:
    report = run_batch(good_export, tmp_path, batch_options, executor=LocalExecutor(workers=2), progress=False)

    assert report.all_ok and _statuses(tmp_path) == _statuses(reference_run)
    assert fused_files(tmp_path) == fused_files(reference_run)


class _KillsItsWorker(StudyPair):
    """A study whose worker dies as it receives it, as one killed for memory would."""

    def __reduce__(self):
        return os._exit, (9,)


def test_a_lost_worker_fails_its_own_study_alone(tmp_path: Path, good_export: Path, batch_options: BatchOptions,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The others fuse on in a worker that takes the dead one's place: one worker's death broke the pool of all, and
    every study it held was redone in a fresh process of its own, one at a time, so a study killed for memory early
    in a batch serialised the rest of it."""
    started = []

    class CountedPool(ProcessPoolExecutor):
        def __init__(self, max_workers: int, **kwargs) -> None:
            started.append(max_workers)
            super().__init__(max_workers, **kwargs)

    monkeypatch.setattr(executors, "ProcessPoolExecutor", CountedPool)
    pairs = discover_studies(good_export).pairs
    killer = _KillsItsWorker(pairs[0].study_uid, pairs[0].ct, pairs[0].pet)
    tasks = [StudyTask(pair, Locator(good_export), tmp_path, batch_options) for pair in [killer, *pairs[1:]]]
    half_written = tmp_path / killer.study_key / f".{killer.study_key}.partial.fused_laplacian_lung.nii.gz"
    half_written.parent.mkdir()
    half_written.write_bytes(b"\x1f\x8b")  # what a worker killed while writing leaves
    results = {result.key: result for result in LocalExecutor(workers=2).run(tasks)}
    assert results[killer.study_key].status == FAILED and "worker lost" in results[killer.study_key].reason
    assert all(results[pair.study_key].status == OK for pair in pairs[1:])
    assert not half_written.parent.exists()  # a failed study leaves no folder, lost worker or not
    # The batch's two workers, one in place of the dead one, one for the killer's retry alone (it may have died of
    # the others' memory): not one more per study.
    assert sum(started) <= 2 + 1 + 1


def test_ray_engine_on_a_local_ray_matches_the_local_engine(tmp_path: Path, good_export: Path, reference_run: Path,
                                                            batch_options: BatchOptions, fused_files) -> None:
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'dcif-fusion[ray]')")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        report = run_batch(good_export, tmp_path, batch_options, executor=RayExecutor(), progress=False)
        assert ray.is_initialized()  # a session the caller started is left to the caller
    finally:
        ray.shutdown()

    assert report.all_ok and _statuses(tmp_path) == _statuses(reference_run)
    assert fused_files(tmp_path) == fused_files(reference_run)


def test_engine_choice_is_checked() -> None:
    assert isinstance(make_executor("local", workers=2), LocalExecutor)
    with pytest.raises(DcifError, match="unknown executor"):
        make_executor("spark")
    with pytest.raises(DcifError, match="at least 1"):
        LocalExecutor(workers=0)
