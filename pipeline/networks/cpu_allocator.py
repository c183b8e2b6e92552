"""Keep the memory the network frees inside the process, so full-slice feature maps are not page-faulted in anew.

glibc's malloc serves every block above its mmap threshold (raised with use, to at most 32 MB) with a
fresh ``mmap`` and hands it back to the kernel on ``free``, and it trims freed heap tops above 128 kB.
A CPU forward at 512 x 512 allocates and frees dozens of 16-32 MB maps (token gathers, convolution
outputs, the MLP's hidden layer), so each of them is zero-filled by the kernel one 4 kB page fault at a
time: a fifth of the shipped model's forward and more than half of a paper-depth one measured on 2
cores (``tools/bench_network.py``). Raising both thresholds keeps freed blocks for the next map of the
same size, the way Intel's PyTorch tuning guides do with jemalloc or these same glibc settings. The
process keeps about what it already needed once: ``fuse-batch`` with the model on a 512x512x300 study
peaked at 1.24 GB against 1.14 GB before (3.9x the raw CT). Elsewhere (macOS, musl, Windows) nothing
changes. ``DCIF_KEEP_FREED_MEMORY=0`` switches it off.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
from functools import lru_cache

KEEP_BYTES = 1 << 30
"""Blocks up to this size come from the heap, and up to this much freed heap is kept (1 GiB)."""

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

logger = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds to :data:`KEEP_BYTES`, once per process; whether it was done."""
    if os.environ.get("DCIF_KEEP_FREED_MEMORY", "1") == "0":
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        libc.gnu_get_libc_version  # noqa: B018 - glibc only: other C libraries have no such mallopt
        done = bool(libc.mallopt(_M_MMAP_THRESHOLD, KEEP_BYTES)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, KEEP_BYTES))
    except (OSError, AttributeError, TypeError):
        return False
    logger.debug("glibc malloc keeps freed blocks up to %d bytes: %s", KEEP_BYTES, done)
    return done
