"""The CPU window-attention kernel (``window_attention.cpp``): built once per machine, SDPA where it cannot be.

At the generator's head size (8 channels per head, 64 tokens per window) ATen's fused attention runs
at a fraction of the CPU's rate and is most of an inference forward. The kernel beside this file does
the same arithmetic about twice as fast on one core. It is compiled with the machine's own compiler
the first time a model runs on the CPU (about 30 s; cached under torch's extension folder, keyed by
the source, the flags, the torch install and the processor), so the wheel stays pure Python. Where it cannot be built
(no compiler, ``DCIF_ATTENTION_KERNEL=0``) attention falls back to ``scaled_dot_product_attention``
with one warning: same numbers, slower.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("window_attention.cpp")
FLAGS = ("-O3", "-march=native", "-ffast-math", "-fopenmp")
TOKENS = 64
HEAD_DIMS = (8, 16)

logger = logging.getLogger(__name__)

WindowAttention = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, float], torch.Tensor]


def _processor() -> str:
    """The CPU's model and instruction-set flags: a binary built with -march=native runs on this kind only."""
    cpuinfo = Path("/proc/cpuinfo")
    text = cpuinfo.read_text() if cpuinfo.is_file() else ""
    lines = [line for line in text.splitlines() if line.startswith(("model name", "flags"))][:2]
    return platform.machine() + "\n".join(lines)


@lru_cache(maxsize=1)
def cpu_window_attention() -> WindowAttention | None:
    """The compiled kernel's ``window_attention(q, k, v, bias, mask, scale)``, or None where it cannot be had."""
    if os.environ.get("DCIF_ATTENTION_KERNEL", "1") == "0":
        return None
    from torch.utils import cpp_extension

    build = " ".join((*FLAGS, torch.__version__, str(Path(torch.__file__).parent), _processor()))
    key = hashlib.sha256(SOURCE.read_bytes() + build.encode()).hexdigest()[:12]
    try:
        logger.info("loading the CPU window-attention kernel (built once per machine, about 30 s the first time)")
        module = cpp_extension.load(name=f"dcif_window_attention_{key}", sources=[str(SOURCE)],
                                    extra_cflags=list(FLAGS), extra_ldflags=["-fopenmp"], verbose=False)
    except Exception as error:  # noqa: BLE001 - no compiler, no headers, a failed build: all mean "use SDPA"
        logger.warning("CPU window-attention kernel unavailable (%s); using scaled_dot_product_attention",
                       str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__)
        return None
    return module.window_attention


def kernel_applies(q: torch.Tensor) -> bool:
    """Whether the kernel takes these queries (windows, heads, N, head_dim): float32 CPU, 64 tokens, 8 or 16 per head."""
    return (q.device.type == "cpu" and q.dtype == torch.float32 and q.shape[-2] == TOKENS
            and q.shape[-1] in HEAD_DIMS and not torch.is_autocast_enabled("cpu"))
