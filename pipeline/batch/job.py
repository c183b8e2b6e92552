"""``dcif fuse-batch``: every PET/CT study under IN_DIR fused into OUT_DIR, resumable, with a report.

Discover the studies; skip those a previous run finished (their ``done.json``); run the rest on an
executor (local processes or Ray); write ``report.json``/``report.csv``. A killed run restarted with
the same command picks up where it stopped: every file is written atomically, an interrupted
study is redone from scratch, and leftover temporary files are removed.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from tqdm import tqdm

from pipeline.batch.executors import Executor, LocalExecutor
from pipeline.batch.layout import clear_study, finished_result, location_key, own_output, study_folder
from pipeline.batch.report import FAILED, BatchReport, FileIssue, Locator, PathRedaction, StudyResult, redacted_logs
from pipeline.batch.task import BatchOptions, StudyTask, cached_fusers, input_files, made_with
from pipeline.errors import DcifError, InputError
from pipeline.fusion.registry import Fuser
from pipeline.fusion.selection import check_device
from pipeline.io.atomic import clear_partial_files
from pipeline.io.discovery import DiscoveryResult, StudyPair, discover_studies
from pipeline.transforms.windowing import check_windows

logger = logging.getLogger(__name__)


def check_options(options: BatchOptions, executor: Executor) -> Mapping[str, Fuser]:
    """Refuse bad options before any study runs: unknown windows or methods, a missing checkpoint or GPU, or a model
    trained on other windows or another SUV ceiling. The fusers, built."""
    check_windows(options.windows)
    if options.device not in ("cpu", "cuda"):
        raise DcifError(f"--device must be cpu or cuda, got {options.device!r}")
    if isinstance(executor, LocalExecutor):  # Ray's workers may have a GPU this machine lacks
        check_device(options.device)
    if not (math.isfinite(options.suv_max) and options.suv_max > 0):
        raise InputError(f"--suv-max must be a positive number, got {options.suv_max}")
    if options.pet_factor is not None and not (math.isfinite(options.pet_factor) and options.pet_factor > 0):
        raise InputError(f"--pet-factor must be a positive number, got {options.pet_factor}")
    # Builds the fusers (kept for an in-process run): an unknown method, a missing checkpoint or one trained on
    # other inputs fails now, on the CPU where the studies run elsewhere (this machine may have no GPU).
    fusers = cached_fusers(options.methods, options.checkpoint, options.device if executor.in_process else "cpu")
    for fuser in fusers.values():
        fuser.check_inputs(options.windows, options.suv_max)
    return fusers


def _discovery_failures(found: DiscoveryResult, locator: Locator,
                        out_dir: Path) -> tuple[list[StudyResult], list[FileIssue]]:
    """Studies discovery could not pair, and files it could not read, named by the locator.

    A failed study leaves no outputs: what an interrupted run left in its folder (no ``done.json``) is removed, as a
    ``fused_*.nii.gz`` glob would take it for a result. A study a previous run finished keeps its outputs, made from
    the files it was exported with then, and its reason says so: a study exported again short of its PET, say, should
    not cost its last good fusion.
    """
    failed = []
    for failure in found.failures:
        reason = locator.redact(failure.reason)
        if failure.key:
            folder = study_folder(out_dir, failure.key)
            if finished_result(folder) is None:
                clear_study(folder)
            else:
                reason += "; the outputs a previous run finished are kept"
        failed.append(StudyResult(key=failure.key, status=FAILED, location=locator.location(failure.location),
                                  reason=reason))
    unreadable = [FileIssue(locator.location(problem.path), locator.redact(problem.reason))
                  for problem in found.problems]
    return failed, unreadable


def run_batch(in_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], options: BatchOptions,
              executor: Executor | None = None, progress: bool = True, explicit_paths: bool = False) -> BatchReport:
    """Fuse every study under ``in_dir`` into ``out_dir`` (resuming a previous run) and write the report.

    ``progress`` shows an overall bar (studies) and, when studies run in this process, one per study.
    ``explicit_paths`` names inputs in the report by their paths instead of pseudonyms (they may name patients).
    Raises DcifError only for bad arguments, an unusable IN_DIR or OUT_DIR, or OUT_DIR held by another
    live run; study failures go into the report.
    """
    in_dir, out_dir = Path(in_dir).resolve(), Path(out_dir).resolve()
    if not in_dir.is_dir():  # before OUT_DIR is made: a mistyped IN_DIR leaves nothing behind
        raise InputError(f"{in_dir}: {'not a folder' if in_dir.exists() else 'folder not found'}")
    executor = executor or LocalExecutor()
    fusers = check_options(options, executor)
    if out_dir == in_dir or out_dir.is_relative_to(in_dir):
        raise InputError(f"{out_dir}: OUT_DIR must not lie inside IN_DIR (outputs would be rescanned)")
    with own_output(out_dir):
        clear_partial_files(out_dir)
        report = fuse_folder(in_dir, out_dir, options, executor, progress, made_with(options, fusers), explicit_paths)
        report.write()
    return report


def fuse_folder(in_dir: Path, out_dir: Path, options: BatchOptions, executor: Executor, progress: bool,
                settings: dict[str, object], explicit_paths: bool = False) -> BatchReport:
    """The batch over ``in_dir`` into an OUT_DIR the caller holds (:func:`~pipeline.batch.layout.own_output`), its
    report not yet written; ``settings``: :func:`~pipeline.batch.task.made_with` of the checked options."""
    locator = Locator(in_dir, None if explicit_paths else location_key(out_dir))
    with redacted_logs(PathRedaction(locator)):  # warnings name inputs as the report does
        return _run(in_dir, out_dir, locator, options, executor, progress, settings)


def _made_otherwise(finished: StudyResult, settings: dict[str, object], pair: StudyPair) -> str | None:
    """Why a finished study is redone: made with other settings (methods, a model's weights, windows...), from other
    files or from other PET header values; None when it is not. A done.json that predates the record of a setting, of
    the files or of the header is taken as made with this run's: a new record does not redo every study an earlier
    version finished."""
    made = dict(finished.made_with)
    inputs, pet_header = made.pop("inputs", None), made.pop("pet_header", None)
    if any(name not in settings or settings[name] != value for name, value in made.items()):
        return "other settings"
    if inputs not in (None, input_files(pair)):
        return "other input files"
    if pet_header not in (None, pair.pet.suv_header):  # a weight or dose corrected in place, every UID kept
        return "other PET header values (weight, dose, units)"
    return None


def _run(in_dir: Path, out_dir: Path, locator: Locator, options: BatchOptions, executor: Executor,
         progress: bool, settings: dict[str, object]) -> BatchReport:
    start = time.perf_counter()
    found = discover_studies(in_dir)
    # One scan serves every study: each is charged an equal share of it as its "discover" stage.
    discover_s = (time.perf_counter() - start) / max(1, len(found.pairs))
    results, unreadable = _discovery_failures(found, locator, out_dir)
    options = replace(options, progress=progress and executor.in_process)
    tasks = []
    for pair in found.pairs:
        finished = finished_result(study_folder(out_dir, pair.study_key))
        redo = None if finished is None else _made_otherwise(finished, settings, pair)
        if finished is not None and redo is None:
            results.append(finished.skipped(locator.location(pair.ct.folder)))
        else:
            if redo is not None:
                logger.warning("study %s: finished with %s, redone with this run's", pair.study_key, redo)
            tasks.append(StudyTask(pair, locator, out_dir, options, discover_s))
    logger.info("%d studies to fuse, %d already done, %d failed discovery", len(tasks),
                len(found.pairs) - len(tasks), len(found.failures))

    with tqdm(total=len(tasks), desc="studies", unit="study", disable=not progress) as bar:
        for result in executor.run(tasks):
            results.append(result)
            bar.update()
    return BatchReport(locator, out_dir, sorted(results, key=lambda r: (r.key == "", r.key, r.location)), unreadable)
