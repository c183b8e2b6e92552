"""Where a batch writes, and how a later run tells finished studies from interrupted ones.

``OUT/<study_key>/`` per study, named by the hash of the StudyInstanceUID and never by a tag value,
so a hostile PatientID such as ``../../etc`` cannot steer a path. ``done.json`` is written last and
atomically: a study folder holding it is complete; a folder without it was interrupted and is redone.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from pipeline.batch.report import StudyResult
from pipeline.io.atomic import atomic_write

DONE_FILE = "done.json"
PREVIEW_FILE = "preview.png"
_STUDY_KEY = re.compile(r"[0-9a-f]{12}")
_PARTIAL = ".*.partial.*"  # temporary names of pipeline.io.atomic.atomic_write


def study_folder(out_dir: Path, study_key: str) -> Path:
    """``OUT/<study_key>``; refuses anything but a 12-hex key, so no input can name another folder."""
    if not _STUDY_KEY.fullmatch(study_key):
        raise ValueError(f"not a study key (12 hexadecimal digits): {study_key!r}")
    return out_dir / study_key


def finished_result(folder: Path) -> StudyResult | None:
    """The result a finished study left in its ``done.json``; None when absent or unreadable."""
    try:
        return StudyResult.from_json((folder / DONE_FILE).read_text())
    except (OSError, ValueError, TypeError):
        return None


def mark_done(folder: Path, result: StudyResult) -> Path:
    """Write ``done.json`` last and atomically: from then on the study counts as finished."""
    path = folder / DONE_FILE
    with atomic_write(path) as temporary:
        temporary.write_text(result.to_json() + "\n")
    return path


def clear_study(folder: Path) -> None:
    """Remove an interrupted or failed study's outputs, so no partial file outlives the run."""
    shutil.rmtree(folder, ignore_errors=True)


def clear_partial_files(out_dir: Path) -> None:
    """Delete temporary files a killed run left at OUT's top level (the report's)."""
    for leftover in out_dir.glob(_PARTIAL):
        leftover.unlink(missing_ok=True)
