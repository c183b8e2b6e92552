"""Atomic file replacement: readers see the old file or the complete new one, never a torn write.

Writers (pydicom, nibabel, json) write to a temporary sibling of the target; the sibling is moved
onto the target with ``os.replace`` only when the writing block finished without an exception.
Being in the same folder keeps the move on one file system, where it is atomic. No fsync: this
protects concurrent readers and interrupted runs, not against power loss.

A temporary is a hidden ``.<hex>.partial.`` name whose end is never the target's full extension, so
nothing that looks for outputs by extension (``rglob('*.nii.gz')``, a viewer, a folder watcher or
forwarder looking for ``*.nii.gz`` or ``*.dcm``) takes a half-written file for one. It ends in ``.tmp``
and then the target's last suffix, the one writers choose a format or compression by (the NIfTI
writer gzips ``.gz``, numpy's ``savez`` adds ``.npz`` when it is missing): ``fused.nii.gz`` is written
as ``.<hex>.partial.fused.nii.tmp.gz``. Writers that need no suffix (pydicom) ask for names ending in
``.tmp``. A killed run's temporaries are removed by :func:`clear_partial_files`, which the writers of a
study's outputs call before writing (:class:`pipeline.fusion.writers.NiftiSink`).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PARTIAL_PATTERN = ".*.partial.*"  # every temporary name of temporary_sibling


def temporary_sibling(path: str | os.PathLike[str], keep_extension: bool = True) -> Path:
    """A fresh hidden name beside ``path`` matching :data:`PARTIAL_PATTERN`: its name with ``.tmp`` before its last
    suffix (``fused.nii.tmp.gz``), or after it without ``keep_extension`` (``fused.dcm.tmp``)."""
    target = Path(path)
    name = f"{target.stem}.tmp{target.suffix}" if keep_extension else f"{target.name}.tmp"
    return target.with_name(f".{secrets.token_hex(6)}.partial.{name}")


@contextmanager
def atomic_write(path: str | os.PathLike[str], keep_extension: bool = True) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path``, on failure it is removed.
    ``keep_extension``: see :func:`temporary_sibling`."""
    target = Path(path)
    temporary = temporary_sibling(target, keep_extension)
    try:
        yield temporary
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def clear_partial_files(folder: Path) -> None:
    """Delete the temporaries a killed run left directly in ``folder`` (an exception removes its own, a kill cannot).

    Only for a folder no other live writer is writing in: its temporary would be deleted under it.
    """
    for leftover in folder.glob(PARTIAL_PATTERN):
        leftover.unlink(missing_ok=True)
