"""The machine a benchmark runs on, as its tables name it, and this process's memory as the kernel counts it.

Imports nothing heavy, so that a benchmark measuring a fresh process's memory (bench_datapath) can use it; torch only
where a GPU is named.
"""

from __future__ import annotations

from pathlib import Path

STATUS = Path("/proc/self/status")


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ("unknown CPU" where it names none)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return "unknown CPU"
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "unknown CPU")


def device_name(device: str, threads: int) -> str:
    """A CUDA device's name, or the CPU's model with the torch threads a benchmark gave it."""
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(device)
    return f"{cpu_model()}, {threads} torch threads"


def status_kib(field: str) -> int:
    """A field of /proc/self/status in KiB: ``VmRSS`` (resident now) or ``VmHWM`` (its peak)."""
    for line in STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{STATUS} has no {field} line")
