"""``dcif fuse-batch URL OUT_DIR``: the folder batch with a PACS as input and, optionally, output.

QIDO-RS finds the PET/CT studies a query names, WADO-RS fetches each into ``OUT_DIR/.dicomweb/`` (whole
studies only, kept across runs while the PACS lists them the same, so a resumed batch fetches only what it lacks
or what changed), the folder batch fuses the studies this run's query found with its report, resume and
per-study isolation, and with ``store`` the fused series of every such study not yet stored (``stored.json``; an
interrupted or refused run's included) go back by STOW-RS into their patient and study, if the study was fetched
from this PACS. A study the PACS will not give or take fails alone, with its reason in the report; one it would
not take keeps its fused outputs for the next run to store. The run holds OUT_DIR from the query until its report
is written.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from pipeline.batch.executors import Executor, LocalExecutor
from pipeline.batch.job import check_options, fuse_folder
from pipeline.batch.layout import STORED_FILE, location_key, mark_stored, own_output, study_folder
from pipeline.batch.report import FAILED, OK, SKIPPED, BatchReport, Locator, StudyResult
from pipeline.batch.task import BatchOptions, made_with
from pipeline.errors import DcifError, error_line
from pipeline.io.atomic import clear_partial_files
from pipeline.io.derived_series import FUSED_FILE
from pipeline.io.dicomweb import connect, fetch_study, fetched_from, find_studies, store_instances

logger = logging.getLogger(__name__)
INBOX = ".dicomweb"  # fetched studies; its hidden entries are a run's temporary folders and files


def run_dicomweb_batch(url: str, out_dir: str | os.PathLike[str], options: BatchOptions, query: Mapping[str, str],
                       store: bool = False, executor: Executor | None = None, progress: bool = True,
                       environ: Mapping[str, str] = os.environ) -> BatchReport:
    """Fuse the PACS studies ``query`` finds at ``url`` into ``out_dir``; ``store`` sends the results back."""
    out_dir = Path(out_dir).resolve()
    client = connect(url, environ)
    executor = executor or LocalExecutor()
    settings = made_with(options, check_options(options, executor))
    with own_output(out_dir):
        clear_partial_files(out_dir)
        inbox = _inbox(out_dir)
        fetched, failures = [], []
        for study in find_studies(client, query):
            try:
                fetched.append(fetch_study(client, study, inbox).name)
            except Exception as error:  # one study's fetch (HTTP, disk, a malformed reply) fails alone
                failures.append(StudyResult(key=study.key, status=FAILED, location=client.base_url,
                                            reason=_reason(client.base_url, f"fetching study {study.key}", error)))
        logger.info("%d studies fetched from %s, %d failed", len(fetched), client.base_url, len(failures))
        with _this_run(inbox, fetched) as in_dir:
            report = _fuse(in_dir, out_dir, options, executor, progress, settings)
        studies = [_stored(client, out_dir, inbox, result) if store else result for result in report.studies]
        report = replace(report, studies=studies + failures)
        report.write()
    return report


def _inbox(out_dir: Path) -> Path:
    """``OUT_DIR/.dicomweb``, without the temporary folders and files a killed run left (this run owns OUT_DIR)."""
    inbox = out_dir / INBOX
    inbox.mkdir(exist_ok=True)
    for leftover in inbox.glob(".*"):
        if leftover.is_dir():
            shutil.rmtree(leftover)
        else:
            leftover.unlink()
    return inbox


def _reason(url: str, action: str, error: Exception) -> str:
    """Why a study could not be fetched or stored, in one line naming the endpoint and the study."""
    return str(error) if isinstance(error, DcifError) else f"{url}: {action} failed: {error_line(error)}"


@contextmanager
def _this_run(inbox: Path, keys: Iterable[str]) -> Iterator[Path]:
    """A private folder of hard links to the fetched studies ``keys``, so the batch sees this run's studies only and
    none the cache kept from earlier queries or other PACS."""
    folder = Path(tempfile.mkdtemp(prefix=".run-", dir=inbox))
    try:
        for key in keys:
            shutil.copytree(inbox / key, folder / key, copy_function=os.link)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _fuse(in_dir: Path, out_dir: Path, options: BatchOptions, executor: Executor, progress: bool,
          settings: dict[str, object]) -> BatchReport:
    """The folder batch over this run's studies in the OUT_DIR it holds; empty when the query found nothing."""
    if not any(in_dir.iterdir()):
        return BatchReport(Locator(in_dir, location_key(out_dir)), out_dir, [])
    return fuse_folder(in_dir, out_dir, options, executor, progress, settings)


def _stored(client, out_dir: Path, inbox: Path, result: StudyResult) -> StudyResult:
    """Send a finished study to the PACS unless an earlier run did (one that stopped before storing did not); a
    refusal or any error fails that study only and keeps its fused outputs, unmarked, for the next run to store; a
    study fetched from another PACS is not sent."""
    folder = study_folder(out_dir, result.key) if result.status in (OK, SKIPPED) else None
    if folder is None:
        return result
    source = fetched_from(inbox / result.key)
    if source != client.base_url:
        return replace(result, status=FAILED, reason=f"{client.base_url}: study {result.key} not stored, it was "
                                                     f"fetched from {source}; use one OUT_DIR per PACS")
    if (folder / STORED_FILE).is_file():
        return result
    try:
        store_instances(client, sorted(folder.glob(f"*/{FUSED_FILE}")))
    except Exception as error:  # a PACS down, busy or refusing; an unreadable output: this study alone
        return replace(result, status=FAILED, reason=_reason(client.base_url, f"storing study {result.key}", error))
    mark_stored(folder)
    return result
