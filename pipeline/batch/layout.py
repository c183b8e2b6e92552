"""Where a batch writes, and how a later run tells finished studies from interrupted ones.

``OUT/<study_key>/`` per study, named by the hash of the StudyInstanceUID and never by a tag value,
so a hostile PatientID such as ``../../etc`` cannot steer a path. ``done.json`` is written last and
atomically: a study folder holding it is complete; a folder without it was interrupted and is redone.
One run at a time owns OUT: it holds an ``flock`` on ``OUT/.lock``, which the kernel releases when
the process ends however it ends, so a crash never leaves the folder locked.
"""

from __future__ import annotations

import fcntl
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.batch.report import StudyResult
from pipeline.errors import DcifError, error_line
from pipeline.io.atomic import atomic_write, output_folder
from pipeline.io.discovery import OUTPUT_MARK

DONE_FILE = "done.json"
STORED_FILE = "stored.json"  # written once a study's fused series are in the PACS (fuse-batch URL --store)
PREVIEW_FILE = "preview.png"
LOCK_FILE = ".lock"
LOCATION_KEY_FILE = OUTPUT_MARK  # secret of the report's pseudonymised input locations: never share
_STUDY_KEY = re.compile(r"[0-9a-f]{12}")


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


def mark_stored(folder: Path) -> None:
    """Record that the study's fused series went back to the PACS, so no later run stores them again."""
    with atomic_write(folder / STORED_FILE) as temporary:
        temporary.write_text("{}\n")


def clear_study(folder: Path) -> None:
    """Remove an interrupted or failed study's outputs, so no partial file outlives the run."""
    shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def own_output(out_dir: Path) -> Iterator[None]:
    """Create OUT and hold it for this run; another live run holding it stops this one at once.

    Any OS error on OUT (a file, read-only, no permission, full), on taking it or while holding it, becomes one line
    naming the file. A run that fails before making anything (an IN_DIR without DICOM files, a PACS refusing the
    query) leaves no folder of its making: those it created are removed while they hold nothing but its lock and
    location key; a folder that was there before is left as it is.
    """
    made = next((folder for folder in (*reversed(out_dir.parents), out_dir) if not folder.exists()), None)
    output_folder(out_dir)
    try:
        lock = (out_dir / LOCK_FILE).open("a")
    except OSError as error:
        raise DcifError(f"{out_dir}: cannot use as output folder ({error.strerror or error})") from None
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DcifError(f"{out_dir}: another fuse-batch run is writing into this output folder; "
                            "wait for it to end, or choose another OUT_DIR") from None
        try:
            yield
        except BaseException as error:
            if made is not None and _holds_nothing_made(made, out_dir):
                shutil.rmtree(made, ignore_errors=True)
            if isinstance(error, OSError):  # OUT became unwritable or full outside any one study
                raise DcifError(error_line(error, out_dir)) from None
            raise


def _holds_nothing_made(folder: Path, out_dir: Path) -> bool:
    """Whether ``folder`` holds only folders and OUT's lock and location key: nothing a run made that it could lose."""
    bookkeeping = {out_dir / LOCK_FILE, out_dir / LOCATION_KEY_FILE}
    return all(path in bookkeeping or (path.is_dir() and not path.is_symlink()) for path in folder.rglob("*"))


def location_key(out_dir: Path) -> bytes:
    """The secret that pseudonymises input locations of OUT's reports, made on first use and kept."""
    path = out_dir / LOCATION_KEY_FILE
    if not path.exists():
        with atomic_write(path) as temporary:
            temporary.write_text(secrets.token_hex(32))
            os.chmod(temporary, 0o600)
    return bytes.fromhex(path.read_text().strip())
