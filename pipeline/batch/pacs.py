"""``dcif fuse-batch URL OUT_DIR``: the folder batch with a PACS as input and, optionally, output.

QIDO-RS finds the PET/CT studies a query names, WADO-RS fetches each into ``OUT_DIR/.dicomweb/`` (whole
studies only, kept across runs, so a resumed batch fetches only what it lacks), the folder batch fuses them
with its report, resume and per-study isolation, and with ``store`` the fused series of every finished study
not yet stored (``stored.json``; an interrupted run's included) go back by STOW-RS into their patient and study.
A study the PACS will not give or take fails alone, with its reason in the report.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from pipeline.batch.executors import Executor
from pipeline.batch.job import run_batch
from pipeline.batch.layout import STORED_FILE, clear_study, mark_stored, study_folder
from pipeline.batch.report import FAILED, OK, SKIPPED, BatchReport, StudyResult
from pipeline.batch.task import BatchOptions
from pipeline.errors import DcifError
from pipeline.io.derived_series import FUSED_FILE
from pipeline.io.dicomweb import connect, fetch_study, find_studies, store_instances
from pipeline.io.headers import study_key

logger = logging.getLogger(__name__)
INBOX = ".dicomweb"


def run_dicomweb_batch(url: str, out_dir: str | os.PathLike[str], options: BatchOptions, query: Mapping[str, str],
                       store: bool = False, executor: Executor | None = None, progress: bool = True,
                       environ: Mapping[str, str] = os.environ) -> BatchReport:
    """Fuse the PACS studies ``query`` finds at ``url`` into ``out_dir``; ``store`` sends the results back."""
    out_dir = Path(out_dir).resolve()
    client = connect(url, environ)
    inbox = out_dir / INBOX
    inbox.mkdir(parents=True, exist_ok=True)
    fetch_failures = []
    for uid in find_studies(client, query):
        try:
            fetch_study(client, uid, inbox)
        except DcifError as error:
            fetch_failures.append(StudyResult(key=study_key(uid), status=FAILED, location=url, reason=str(error)))
    logger.info("%d studies fetched from %s", len(list(inbox.iterdir())), url)
    report = run_batch(inbox, out_dir, options, executor=executor, progress=progress)
    studies = [_stored(client, out_dir, result) if store else result for result in report.studies]
    report = replace(report, studies=studies + fetch_failures)
    report.write()
    return report


def _stored(client, out_dir: Path, result: StudyResult) -> StudyResult:
    """Send a finished study to the PACS unless an earlier run did (one that stopped before storing did not); a
    refusal fails that study only (it is redone next run)."""
    folder = study_folder(out_dir, result.key) if result.status in (OK, SKIPPED) else None
    if folder is None or (folder / STORED_FILE).is_file():
        return result
    try:
        store_instances(client, sorted(folder.glob(f"*/{FUSED_FILE}")))
    except DcifError as error:
        clear_study(folder)  # not done until stored: the next run fuses and stores it again
        return replace(result, status=FAILED, reason=str(error))
    mark_stored(folder)
    return result
