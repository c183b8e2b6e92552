"""Atomic file replacement: readers see the old file or the complete new one, never a torn write; and the output
folders they are written in, made or refused in one line (:func:`output_folder`).

Writers (pydicom, nibabel, json) write to a temporary sibling of the target; the sibling is moved
onto the target with ``os.replace`` only when the writing block finished without an exception.
Being in the same folder keeps the move on one file system, where it is atomic. No fsync: this
protects concurrent readers and interrupted runs, not against power loss.

A temporary is a hidden ``.<hex>.partial.<name>.tmp``, so nothing that looks for outputs by extension
(``rglob('*.nii.gz')``, a viewer, a folder watcher or forwarder looking for ``*.dcm`` or ``*.json``) takes a
half-written file for one; a writer that would choose a format by the name is given the format (the NIfTI writer is
told whether to gzip, numpy's ``savez`` gets an open file). A killed run's temporaries are removed by
:func:`clear_partial_files`: at once where a lock keeps other runs out of the folder (``fuse-batch``), else once they
have not been written for :data:`IDLE_TEMPORARY_S` (a study's NIfTI sink, the deploy app), so a run writing into the
same folder at the same time keeps its own.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from pipeline.errors import InputError

PARTIAL_PATTERN = ".*.partial.*"  # every temporary name of temporary_sibling, and of earlier versions
IDLE_TEMPORARY_S = 600.0
"""A temporary written to within this many seconds may be a live run's: sweeps without a lock leave it. A live writer
writes a slab of slices every few seconds, a study's NIfTI sink from the first fused slab to the last."""


def temporary_sibling(path: str | os.PathLike[str]) -> Path:
    """A fresh hidden name beside ``path`` matching :data:`PARTIAL_PATTERN` and ending in ``.tmp``."""
    target = Path(path)
    return target.with_name(f".{secrets.token_hex(6)}.partial.{target.name}.tmp")


def output_folder(folder: Path) -> Path:
    """``folder``, created if absent; one that is a file or cannot be made (a parent that is a file or read-only) is
    an InputError naming it and the reason, raised before any work, instead of an OS error's traceback midway."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:  # mkdir's own reason, "File exists", would not say what is wrong with it
        raise InputError(f"{folder}: cannot use as output folder (not a folder)") from None
    except OSError as error:
        raise InputError(f"{folder}: cannot use as output folder ({error.strerror or error})") from None
    return folder


@contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write (:func:`temporary_sibling`); on success it replaces ``path``, on failure it is
    removed."""
    target = Path(path)
    temporary = temporary_sibling(target)
    try:
        yield temporary
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def clear_partial_files(folder: Path, idle_s: float = 0.0) -> None:
    """Delete the temporaries a killed run left directly in ``folder`` (an exception removes its own, a kill cannot):
    those not written to for ``idle_s`` seconds, every one with the default 0, for a folder a lock keeps other runs
    out of."""
    written_before = time.time() - idle_s
    for leftover in folder.glob(PARTIAL_PATTERN):
        with suppress(FileNotFoundError):  # another sweep, or its own writer's rename, got there first
            if not idle_s or leftover.stat().st_mtime < written_before:
                leftover.unlink()
