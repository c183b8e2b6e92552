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
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import ExitStack
from typing import Protocol

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

    Each worker is a pool of its own, so a worker that dies (killed for memory, say) breaks only its pool: the study it
    was running is known, the other workers fuse on, and a fresh worker takes the dead one's place. The lost study is
    retried once at the end, alone on the machine (it may have died of the others' memory); dying again, it fails.
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
        lost: list[StudyTask] = []
        yield from self._in_parallel(tasks, lost)
        for task in lost:
            with self._pool() as pool:
                yield _collect(pool.submit(process_study, task).result, task)

    def _in_parallel(self, tasks: Sequence[StudyTask], lost: list[StudyTask]) -> Iterator[StudyResult]:
        """The results of ``tasks`` run ``workers`` at a time; those whose worker died are appended to ``lost``."""
        waiting = deque(tasks)
        running: dict[Future, tuple[ProcessPoolExecutor, StudyTask]] = {}
        idle: list[ProcessPoolExecutor] = []
        with ExitStack() as pools:
            while waiting or running:
                while waiting and len(running) < self.workers:
                    pool = idle.pop() if idle else pools.enter_context(self._pool())
                    task = waiting.popleft()
                    running[pool.submit(process_study, task)] = pool, task
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    pool, task = running.pop(future)
                    if isinstance(future.exception(), BrokenProcessPool):
                        lost.append(task)  # its pool died with its worker: the next task gets a fresh one
                    else:
                        idle.append(pool)
                        yield _collect(future.result, task)

    def _pool(self) -> ProcessPoolExecutor:
        """One spawned worker with the batch's share of the cores, bound to this process."""
        threads = max(1, (os.cpu_count() or 1) // self.workers)
        # spawn, not fork: a forked copy of a process holding torch's thread pools can deadlock.
        return ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
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
