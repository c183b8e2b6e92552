"""Atomic file replacement: readers see the old file or the complete new one, never a torn write.

Writers (pydicom, nibabel, json) write to a temporary sibling of the target; the sibling is moved
onto the target with ``os.replace`` only when the writing block finished without an exception.
Being in the same folder keeps the move on one file system, where it is atomic. The temporary
name keeps the target's full name as its *suffix*, so writers that choose a format from the
extension (nibabel's ``.nii.gz``) still see the right one; writers that need no extension (pydicom) ask for
names ending in ``.tmp``, so a forwarder watching a folder for ``*.dcm`` never sends a half-written object.
No fsync: this protects concurrent readers and interrupted runs, not against power loss.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def temporary_sibling(path: str | os.PathLike[str], keep_extension: bool = True) -> Path:
    """A fresh hidden name beside ``path`` that a batch sweeps as partial (``.*.partial.*``), ending in its name, or
    in ``.tmp`` without ``keep_extension``."""
    target = Path(path)
    return target.with_name(f".{secrets.token_hex(6)}.partial.{target.name}{'' if keep_extension else '.tmp'}")


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
