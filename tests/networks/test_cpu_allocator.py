"""The CPU forward keeps freed memory in the process where the C library is glibc, and can be told not to.

The setting is process-wide and made once, so each setting runs in one fresh interpreter: a small CPU
forward, then a 32 MB map (a 512 x 512 x 16 float feature map) written and freed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

GLIBC = hasattr(ctypes.CDLL(ctypes.util.find_library("c")), "gnu_get_libc_version")
STATM = Path("/proc/self/statm").exists()

PROBE = """
import json, os, torch
from pipeline.networks import cpu_allocator, DCIFGAN
def resident_mb():  # 0 where Linux's /proc is absent (the test that reads it skips there)
    if not os.path.exists("/proc/self/statm"):
        return 0.0
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
generator = DCIFGAN("network4", width=8, num_heads=2, depths=(1, 1, 1)).generator.eval()
with torch.inference_mode():
    generator(torch.rand(1, 2, 16, 16))
a = torch.ones(8 << 20)
before = resident_mb()
del a
print(json.dumps({"calls": cpu_allocator.keep_freed_memory.cache_info().currsize,
                  "kept": cpu_allocator.keep_freed_memory(),
                  "returned_mb": before - resident_mb()}))
"""


@pytest.fixture(scope="module")
def probes() -> dict[str, dict]:
    """The probe's findings by setting: ``default`` and ``off`` (``DCIF_KEEP_FREED_MEMORY=0``)."""
    found = {}
    for setting, env in (("default", {}), ("off", {"DCIF_KEEP_FREED_MEMORY": "0"})):
        done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True,
                              env={**os.environ, **env})
        found[setting] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


@pytest.mark.skipif(not GLIBC, reason="mallopt thresholds are glibc's; elsewhere nothing is changed")
def test_a_cpu_forward_raises_the_thresholds_once(probes: dict[str, dict]) -> None:
    assert (probes["default"]["calls"], probes["default"]["kept"]) == (1, True)


def test_it_can_be_switched_off(probes: dict[str, dict]) -> None:
    assert (probes["off"]["calls"], probes["off"]["kept"]) == (1, False)


@pytest.mark.skipif(not GLIBC or not STATM, reason="glibc's mallopt, Linux's /proc")
def test_a_freed_full_slice_map_stays_in_the_process(probes: dict[str, dict]) -> None:
    """The 32 MB map: kept for the next one by default, given back to the kernel when switched off."""
    assert probes["default"]["returned_mb"] < 4
    assert probes["off"]["returned_mb"] > 28
