"""Executors run study tasks and yield their results as they finish: on this machine, or on a Ray cluster.

Every executor runs the same :func:`~pipeline.batch.task.process_study`, so a study's outputs do
not depend on where it ran. A study's own failures come back as failed results; an executor turns a
lost worker (killed for memory, a node gone) into a failed result of the study it was running.
Ray is imported only by the Ray executor: the default local executor needs none of it.
"""

from __future__ import annotations

import importlib.util
import logging
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Protocol

import torch

from pipeline.batch.layout import clear_study, study_folder
from pipeline.batch.report import StudyResult
from pipeline.batch.task import StudyTask, process_study
from pipeline.errors import DcifError, error_line, one_line
from pipeline.worker import init_worker

EXECUTORS = ("local", "ray")


class Executor(Protocol):
    """Runs study tasks; ``in_process`` says whether per-study progress bars reach the terminal."""

    in_process: bool

    def run(self, tasks: Sequence[StudyTask]) -> Iterator[StudyResult]: ...


def _collect(fetch: Callable[[], StudyResult], task: StudyTask) -> StudyResult:
    """A finished task's result, or its failure when the worker running it was lost (its half-written outputs
    removed, as a study that fails in its worker leaves none)."""
    try:
        return fetch()
    except Exception as error:  # the worker process or node died: the study failed, the batch goes on
        clear_study(study_folder(task.out_dir, task.pair.study_key))  # what it was writing when it died
        return task.failed(f"worker lost while fusing ({error_line(error)})")


class LocalExecutor:
    """Studies one after another in this process, or ``workers`` at a time in spawned processes.

    A worker that dies (killed for memory, say) breaks the whole pool and every study it held: those are redone in a
    worker of their own, one at a time, so only the study that kills its worker fails.
    """

    def __init__(self, workers: int = 1):
        if workers < 1:
            raise DcifError(f"--workers must be at least 1, got {workers}")
        self.workers = workers
        self.in_process = workers == 1

    def run(self, tasks: Sequence[StudyTask]) -> Iterator[StudyResult]:
        if self.in_process:
            yield from map(process_study, tasks)
            return
        lost = []
        with self._pool(self.workers) as pool:
            futures = {pool.submit(process_study, task): task for task in tasks}
            for future in as_completed(futures):
                if isinstance(future.exception(), BrokenProcessPool):
                    lost.append(futures[future])
                else:
                    yield _collect(future.result, futures[future])
        for task in lost:
            with self._pool(1) as pool:
                yield _collect(pool.submit(process_study, task).result, task)

    def _pool(self, workers: int) -> ProcessPoolExecutor:
        """``workers`` spawned processes, each with the batch's share of the cores and bound to this process."""
        threads = max(1, (os.cpu_count() or 1) // self.workers)
        # spawn, not fork: a forked copy of a process holding torch's thread pools can deadlock.
        return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=init_worker, initargs=(threads, os.getpid()))


class RayExecutor:
    """One Ray task per study on the cluster at ``address`` (None: RAY_ADDRESS, else a local Ray).

    Each task asks for ``cpus_per_study`` CPUs and, on ``cuda``, one GPU, so Ray places as many
    studies on a node as it has resources for. A Ray session already initialised by the caller is used
    as is; one this executor starts is shut down when the batch ends.
    """

    in_process = False

    def __init__(self, address: str | None = None, device: str = "cpu", cpus_per_study: float = 1.0):
        if importlib.util.find_spec("ray") is None:
            raise DcifError("--executor ray needs Ray: pip install 'dcif-fusion[ray]'")
        self.address = address
        self.resources = {"num_cpus": cpus_per_study, "num_gpus": 1 if device == "cuda" else 0}

    def run(self, tasks: Sequence[StudyTask]) -> Iterator[StudyResult]:
        import ray

        started = not ray.is_initialized()
        if started:
            try:
                ray.init(address=self.address, logging_level=logging.WARNING)
            except Exception as error:  # Ray raises several types for an unreachable or refusing cluster
                raise DcifError(f"cannot start or reach Ray at {self.address or 'a local instance'}: "
                                f"{one_line(error)}") from None
        try:
            remote = ray.remote(**self.resources)(process_study)
            pending = {remote.remote(task): task for task in tasks}
            while pending:
                (ready,), _ = ray.wait(list(pending), num_returns=1)
                yield _collect(lambda: ray.get(ready), pending.pop(ready))
        finally:
            if started:
                ray.shutdown()


def make_executor(name: str, workers: int = 1, address: str | None = None, device: str = "cpu") -> Executor:
    """The executor ``--executor`` names: ``local`` (with ``workers``) or ``ray`` (at ``address``)."""
    if name == "local":
        return LocalExecutor(workers)
    if name == "ray":
        return RayExecutor(address, device)
    raise DcifError(f"unknown executor {name!r}; use one of {', '.join(EXECUTORS)}")
