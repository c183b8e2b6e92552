"""The CPU forward keeps freed memory in the process where the C library is glibc, and can be told not to."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.networks import cpu_allocator

GLIBC = hasattr(ctypes.CDLL(ctypes.util.find_library("c")), "gnu_get_libc_version")


def _run(code: str, **env: str) -> str:
    """``code`` in a fresh interpreter (the setting is process-wide and made once)."""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env={**os.environ, **env})
    return result.stdout.strip()


FORWARD = """
import torch
from pipeline.networks import cpu_allocator, DCIFGAN
generator = DCIFGAN("network4", width=8, num_heads=2, depths=(1, 1, 1)).generator.eval()
with torch.inference_mode():
    generator(torch.rand(1, 2, 16, 16))
print(cpu_allocator.keep_freed_memory.cache_info().currsize, cpu_allocator.keep_freed_memory())
"""


@pytest.mark.skipif(not GLIBC, reason="mallopt thresholds are glibc's; elsewhere nothing is changed")
def test_a_cpu_forward_raises_the_thresholds_once() -> None:
    assert _run(FORWARD) == "1 True"


def test_it_can_be_switched_off() -> None:
    assert _run(FORWARD, DCIF_KEEP_FREED_MEMORY="0") == "1 False"


RESIDENT_AFTER_FREE = """
import os, torch
from pipeline.networks.cpu_allocator import keep_freed_memory
keep_freed_memory()
def resident_mb():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
a = torch.ones(8 << 20)  # 32 MB, written
before = resident_mb()
del a
print(round(before - resident_mb()))
"""


@pytest.mark.skipif(not GLIBC or not Path("/proc/self/statm").exists(), reason="glibc's mallopt, Linux's /proc")
def test_a_freed_full_slice_map_stays_in_the_process() -> None:
    """The 32 MB of a 512 x 512 x 16 float map: given back to the kernel on free by default, kept with the setting."""
    assert int(_run(RESIDENT_AFTER_FREE)) < 4
    assert int(_run(RESIDENT_AFTER_FREE, DCIF_KEEP_FREED_MEMORY="0")) > 28
