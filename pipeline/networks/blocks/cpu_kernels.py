"""The blocks' CPU kernels (the ``.cpp`` files beside this one): built once per machine, ATen where they cannot be.

- **Window attention** (``window_attention.cpp``). At the generator's head size (8 channels per
  head, 64 tokens per window) ATen's attention runs at a fraction of the CPU's rate and is most of a
  forward, and under autograd its batched GEMMs with 8-wide results are most of a training step.
  The kernel does the same arithmetic, forward and backward, 1.5-2.5x faster.
- **LayerNorm** (``layer_norm.cpp``). ATen's CPU LayerNorm pays a per-row overhead that, at the
  blocks' 16-60 channels per token, makes it a fifth of a forward at 512 x 512; the kernel, with the
  channel count known at compile time, is 4-6x faster, forward and backward, and about 12x at 16
  channels, where it normalises a register's worth of rows at once.
- **Token linear layers** (``token_linear.cpp``). The blocks' linear layers are GEMMs tens of thousands of
  rows tall and 16-96 channels wide, which MKL's sgemm runs at a third to two thirds of its square-matrix rate
  on 2 cores; the kernel's register tiles (6 x 16 floats, 8 x 32 with AVX-512) run them 1.2-1.5x faster forward
  and 1.25-2x backward (bias and its gradient included), for layers whose widths are multiples of 16.
- **GELU** (``gelu.cpp``). ATen's CPU GELU (erf form) is a tenth of a forward at 512 x 512 on an AVX2
  CPU; the kernel's erf is one rational polynomial, and in inference it overwrites the first MLP layer's
  output in place (adding its bias where that layer runs as a bare GEMM).
- **Fused pre-norm layers** (``pre_norm.cpp``). In inference a block's LayerNorm and Q/K/V projection run as one
  kernel, and its output projection, LayerNorm, feed-forward and both residuals as another, over blocks of 48 rows
  whose normalised rows and hidden layer stay in L1, with the routines of the three kernels above (``layer_norm.h``,
  ``token_linear.h``, ``gelu.h``): the same numbers, and a 512 x 512 forward 1.12-1.15x faster (Xeon, shipped and
  paper-depth models). Under autograd the LayerNorm + projection and the two residuals are one node each that
  keeps only its inputs, its backward recomputing the rest block by block in L1: a training iteration 1.085x faster
  (shipped and paper depth, 64 x 64 crops) with the output projection still apart, and 1.00-1.05x more with it
  inside.

The kernels work on one vector register's lanes (``lanes.h``): 16 floats where
the CPU has AVX-512, 8 on an AVX2 CPU (a laptop's), where 16-float values would take two registers each and
spill; the token linear kernel's 16-column tiles are one AVX-512 register a row, or two AVX2 ones.

They are compiled with the machine's own compiler (GCC 11 or newer, or clang) the first time a model runs on the
CPU (one to three minutes on two cores; cached under torch's extension folder, ``TORCH_EXTENSIONS_DIR`` where set,
keyed by the sources, the flags, the torch install, the compiler and the processor), so the wheel stays pure Python.
One process builds while the others wait on an operating-system lock, which a killed builder cannot leave behind;
a build that failed is remembered under its key, so later processes do not spend minutes failing again; a read-only
cache that holds a build is used as it is. Where they cannot be built (no compiler, a failed build,
``DCIF_CPU_KERNELS=0``) the blocks fall back to ATen with one warning naming the reason: same numbers, slower.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import logging
import os
import platform
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import is_in_torch_dispatch_mode

from pipeline.networks.blocks.windows import place_rows

try:
    import fcntl
except ImportError:  # Windows: torch's own lock alone
    fcntl = None

SOURCES = tuple(Path(__file__).with_name(name) for name in (
    "window_attention.cpp", "layer_norm.cpp", "gelu.cpp", "token_linear.cpp", "pre_norm.cpp", "bindings.cpp"))
HEADERS = tuple(Path(__file__).with_name(name)
                for name in ("lanes.h", "layer_norm.h", "gelu.h", "token_linear.h", "parts.h"))
FLAGS = ("-O3", "-march=native", "-ffast-math", "-fopenmp")
FAILED = "failed.txt"
"""In a build's folder: the error of a build that failed, which later processes report instead of building again."""
TOKENS = 64
HEAD_DIMS = (8, 10, 16)
"""Head sizes the kernel is built for: the shipped and paper widths (8), SwinFusion's (10), and 16."""

logger = logging.getLogger(__name__)

_EMPTY = torch.empty(0)
"""What the kernels take for no mask and no bias."""


def _processor(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model and instruction-set features: a binary built with -march=native runs on this kind only (x86's
    model name and flags; ARM's implementer, part and features)."""
    text = cpuinfo.read_text() if cpuinfo.is_file() else ""
    first: dict[str, str] = {}
    for line in text.splitlines():
        key = line.split(":", 1)[0].strip()
        if key in ("model name", "flags", "CPU implementer", "CPU architecture", "CPU variant", "CPU part", "Features"):
            first.setdefault(key, line)
    return "\n".join((platform.machine(), platform.processor(), *first.values()))


def _compiler() -> str:
    """The first line of ``--version`` of the C++ compiler torch builds with (``$CXX``, else ``c++``); '' if none."""
    try:
        found = subprocess.run([os.environ.get("CXX", "c++"), "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return ""
    return (found.stdout.strip().splitlines() or [""])[0]


def _first_error(error: BaseException) -> str:
    """The line of a failed build that says why: the compiler's first error, else the message's last line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    errors = [line for line in lines if "error:" in line]
    return errors[0] if errors else lines[-1] if lines else type(error).__name__


@contextmanager
def _one_builder(folder: Path) -> Iterator[None]:
    """Hold the folder's build lock: one process builds (or imports) at a time, the others wait. The operating system
    releases it when its holder dies, so torch's own lock file, which a builder killed half-way leaves for ever, can
    only be stale while this one is held, and is removed."""
    with open(folder / "build.lock", "a") as handle:
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            (folder / "lock").unlink(missing_ok=True)
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _import_built(name: str, library: Path) -> ModuleType:
    """The extension module at ``library``, as torch imports it after a build."""
    spec = importlib.util.spec_from_file_location(name, library)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@lru_cache(maxsize=1)
def cpu_kernel() -> ModuleType | None:
    """The compiled module (``window_attention``, ``layer_norm``, ``gelu`` and their backwards), or None where it cannot
    be had."""
    if os.environ.get("DCIF_CPU_KERNELS", "1") == "0":
        return None
    return build(FLAGS)


def build(flags: tuple[str, ...]) -> ModuleType | None:
    """The kernels compiled with ``flags`` (cached per flags, sources, torch install, compiler and processor), or None
    with one warning where they cannot be: the product builds with :data:`FLAGS`; a test adds ``-mno-avx512f`` to check
    the AVX2 lanes on an AVX-512 CPU. The sources' folder is part of the key: two checkouts of the same sources (a
    benchmark's baseline worktree) would otherwise share a build that ninja redoes for each in turn."""
    compiler = _compiler()
    build_key = " ".join((*flags, torch.__version__, str(Path(torch.__file__).parent), str(SOURCES[0].parent),
                          compiler, _processor()))
    sources = b"".join(source.read_bytes() for source in SOURCES + HEADERS)
    name = "dcif_cpu_kernels_" + hashlib.sha256(sources + build_key.encode()).hexdigest()[:12]
    try:
        # Imported here, inside the fallback: it imports setuptools, whose distutils shim asserts when
        # another package (Holoscan, in the deploy app) imported the standard library's distutils first.
        cpp_extension = importlib.import_module("torch.utils.cpp_extension")
        folder = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or cpp_extension.get_default_build_root()) / name
        library = folder / f"{name}.so"
        if library.is_file() and not os.access(folder, os.W_OK):  # a shared, read-only cache: no lock to take
            return _import_built(name, library)
        if not compiler:
            raise RuntimeError(f"no C++ compiler ({os.environ.get('CXX', 'c++')})")
        folder.mkdir(parents=True, exist_ok=True)
        failed = folder / FAILED
        with _one_builder(folder):  # a process that waited on a build that failed reads its error here
            if failed.is_file():
                raise RuntimeError(f"{failed.read_text().strip()}; an earlier build failed so: remove {failed} to "
                                   "try again")
            logger.info("loading the CPU kernels (built once per machine, a minute or more the first time)")
            try:
                # -fopenmp links libgomp.so.1, which resolves to the copy torch has already loaded: one thread pool.
                return cpp_extension.load(name=name, sources=[str(source) for source in SOURCES],
                                          build_directory=str(folder), extra_cflags=list(flags),
                                          extra_ldflags=["-fopenmp"], verbose=False)
            except Exception as error:
                failed.write_text(_first_error(error) + "\n")
                raise
    except Exception as error:  # noqa: BLE001 - no compiler, no headers, a failed build or import: all mean "use ATen"
        logger.warning("CPU kernels unavailable (%s); using ATen's attention, LayerNorm, GELU and linear layers",
                       _first_error(error))
        return None


def _kernels_take(x: torch.Tensor) -> bool:
    """Float32 CPU tensors in eager mode: a trace, an export or ``torch.compile`` records ATen's ops instead, and so
    does any dispatch mode (torch's FLOP counter, fake tensors), which cannot see into a kernel call."""
    if torch.jit.is_tracing() or torch.compiler.is_compiling() or is_in_torch_dispatch_mode():
        return False
    return (x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")
            and cpu_kernel() is not None)


def split_projections(queries: torch.Tensor, keys_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Q of one projection and K, V of another, each (windows, N, 3, heads, head_dim), as (windows, heads, N, head_dim) views."""
    return queries[:, :, 0].transpose(1, 2), keys_values[:, :, 1].transpose(1, 2), keys_values[:, :, 2].transpose(1, 2)


def kernel_applies(queries: torch.Tensor) -> bool:
    """Whether the attention kernel takes this projection (windows, N, 3, heads, head_dim): float32 CPU, 64 tokens,
    a head size of :data:`HEAD_DIMS`, eager mode."""
    return _kernels_take(queries) and queries.shape[1] == TOKENS and queries.shape[-1] in HEAD_DIMS


class _WindowAttention(torch.autograd.Function):
    """The kernel's forward and backward as one autograd node; the mask carries no gradient.

    The gradients come back in the projections' own layout, one tensor per projection (the kernel writes dQ, dK and
    dV into its views): handed three separate ones, autograd would stack them, a strided copy that took a twelfth
    of a CPU training step.
    """

    @staticmethod
    def forward(ctx: Any, queries: torch.Tensor, keys_values: torch.Tensor, bias: torch.Tensor, mask: torch.Tensor,
                scale: float) -> torch.Tensor:
        ctx.save_for_backward(queries, keys_values, bias, mask)
        ctx.scale, ctx.shared = scale, queries is keys_values
        return cpu_kernel().window_attention(*split_projections(queries, keys_values), bias, mask, scale)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        queries, keys_values, bias, mask = ctx.saved_tensors
        d_queries = torch.empty_like(queries)
        d_keys_values = d_queries if ctx.shared else torch.empty_like(keys_values)
        if not ctx.shared:  # each projection has a gradient in its own part only
            d_queries[:, :, 1:].zero_()
            d_keys_values[:, :, 0].zero_()
        dbias = cpu_kernel().window_attention_backward(*split_projections(queries, keys_values), bias, mask, grad,
                                                       ctx.scale, *split_projections(d_queries, d_keys_values))
        return d_queries, None if ctx.shared else d_keys_values, dbias, None, None


def _tracked(*tensors: torch.Tensor) -> bool:
    """Whether autograd records an op on these: grad mode on and one of them requires a gradient (the kernels' autograd
    nodes are applied only then)."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def window_attention(queries: torch.Tensor, keys_values: torch.Tensor, bias: torch.Tensor,
                     mask: torch.Tensor | None, scale: float) -> torch.Tensor:
    """softmax(scale Q K^T + B [+ mask]) V by the kernel, as (windows, N, heads, head_dim); see :func:`kernel_applies`.

    Q comes from ``queries`` and K, V from ``keys_values`` (the same tensor in self-attention), each a projection
    (windows, N, 3, heads, head_dim); ``bias``: (heads, N, N); ``mask``: (M, N, N) for the last M windows (a shifted
    block's masked windows, which its order puts last), symmetric as the SW-MSA masks are (token i sees token j iff
    both lie in one region), or None.
    """
    mask = _EMPTY if mask is None else mask
    if _tracked(queries, keys_values, bias):
        return _WindowAttention.apply(queries, keys_values, bias, mask, scale)
    return cpu_kernel().window_attention(*split_projections(queries, keys_values), bias, mask, scale)


class _CrossAttention(torch.autograd.Function):
    """Both directions of a CMIFM block (A's queries on B's keys and values, and B's on A's) as one autograd node.

    One direction's backward writes dQ into its query projection's gradient and dK, dV into the other's; the other
    direction writes the remaining parts, so each projection's gradient is written whole. Two nodes each zero-filled
    the parts of their two gradients they do not write and left autograd to sum them (1-2 % of a CPU training step).
    """

    @staticmethod
    def forward(ctx: Any, qkv_a: torch.Tensor, qkv_b: torch.Tensor, bias_a: torch.Tensor, bias_b: torch.Tensor,
                mask: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        ctx.save_for_backward(qkv_a, qkv_b, bias_a, bias_b, mask)
        ctx.scale = scale
        kernel = cpu_kernel()
        return (kernel.window_attention(*split_projections(qkv_a, qkv_b), bias_a, mask, scale),
                kernel.window_attention(*split_projections(qkv_b, qkv_a), bias_b, mask, scale))

    @staticmethod
    def backward(ctx: Any, grad_a: torch.Tensor, grad_b: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        qkv_a, qkv_b, bias_a, bias_b, mask = ctx.saved_tensors
        d_a, d_b = torch.empty_like(qkv_a), torch.empty_like(qkv_b)
        kernel = cpu_kernel()
        dbias_a = kernel.window_attention_backward(*split_projections(qkv_a, qkv_b), bias_a, mask, grad_a, ctx.scale,
                                                   *split_projections(d_a, d_b))
        dbias_b = kernel.window_attention_backward(*split_projections(qkv_b, qkv_a), bias_b, mask, grad_b, ctx.scale,
                                                   *split_projections(d_b, d_a))
        return d_a, d_b, dbias_a, dbias_b, None, None


def cross_attention(qkv_a: torch.Tensor, qkv_b: torch.Tensor, bias_a: torch.Tensor, bias_b: torch.Tensor,
                    mask: torch.Tensor | None, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`window_attention` of A's queries on B's keys and values (with A's bias) and of B's on A's, by the
    kernel: each (windows, N, heads, head_dim). Under autograd one node for both (see :class:`_CrossAttention`)."""
    mask = _EMPTY if mask is None else mask
    if _tracked(qkv_a, qkv_b, bias_a, bias_b):
        return _CrossAttention.apply(qkv_a, qkv_b, bias_a, bias_b, mask, scale)
    return window_attention(qkv_a, qkv_b, bias_a, mask, scale), window_attention(qkv_b, qkv_a, bias_b, mask, scale)


class _LayerNorm(torch.autograd.Function):
    """The LayerNorm kernel's forward and backward as one autograd node."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
        y, mean, rstd = cpu_kernel().layer_norm(x, weight, bias, eps)
        ctx.save_for_backward(x, weight, mean, rstd)
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight, mean, rstd = ctx.saved_tensors
        dx, dweight, dbias = cpu_kernel().layer_norm_backward(x, weight, mean, rstd, grad)
        return dx, dweight, dbias, None


class TokenLayerNorm(torch.nn.LayerNorm):
    """``nn.LayerNorm`` (same parameters, same numbers within float rounding) that runs the CPU kernel on
    (tokens, C) float32 rows where it applies, and ATen's LayerNorm elsewhere (TorchScript included)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting():
            if x.dim() == 2 and x.is_contiguous() and self.bias is not None and _kernels_take(x):
                if _tracked(x, self.weight, self.bias):
                    return _LayerNorm.apply(x, self.weight, self.bias, self.eps)
                return cpu_kernel().layer_norm(x, self.weight, self.bias, self.eps)[0]
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)


class _Gelu(torch.autograd.Function):
    """The GELU kernel's forward and backward as one autograd node."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return cpu_kernel().gelu(x, _EMPTY, torch.empty_like(x))

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return cpu_kernel().gelu_backward(x, grad)


class _TokenLinear(torch.autograd.Function):
    """The token linear kernel's forward (with a residual added, or none) and backward as one autograd node; dX only
    where the input needs it, and the residual's gradient is the output's."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                residual: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        return cpu_kernel().token_linear(x, weight, bias, x.new_empty(x.shape[0], weight.shape[0]), residual)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()
        needs_x, _, needs_bias, needs_residual = ctx.needs_input_grad
        dx, dweight, dbias = cpu_kernel().token_linear_backward(x, weight, grad, needs_x)
        return dx if needs_x else None, dweight, dbias if needs_bias else None, grad if needs_residual else None


def _layer_takes(linear: torch.nn.Linear) -> bool:
    """A layer whose widths are multiples of 16, its weight contiguous float32 (see ``token_linear.cpp``)."""
    weight = linear.weight
    return (linear.in_features % 16 == 0 and linear.out_features % 16 == 0 and weight.dtype == torch.float32
            and weight.is_contiguous())


def _linear_applies(x: torch.Tensor, linear: torch.nn.Linear) -> bool:
    """(tokens, C) float32 rows into a layer the token linear kernel takes."""
    return x.dim() == 2 and x.is_contiguous() and _layer_takes(linear) and _kernels_take(x)


def token_linear(x: torch.Tensor, linear: torch.nn.Linear, residual: torch.Tensor | None = None) -> torch.Tensor:
    """``linear(x)``, plus ``residual`` if given, of (tokens, C) rows: the token linear kernel where it applies,
    ATen's otherwise.

    MKL's sgemm runs these tall, narrow products (16-96 channels) at a third to two thirds of its square-matrix
    rate on 2 cores; the kernel runs them 1.2-2x faster, and adds the bias and a block's residual as it writes its
    output instead of in passes of their own.
    """
    if not _linear_applies(x, linear) or (residual is not None and not residual.is_contiguous()):
        return linear(x) if residual is None else residual + linear(x)
    bias = _EMPTY if linear.bias is None else linear.bias
    add = _EMPTY if residual is None else residual
    if _tracked(x, add, *linear.parameters()):
        return _TokenLinear.apply(x, linear.weight, bias, add)
    return cpu_kernel().token_linear(x, linear.weight, bias, x.new_empty(x.shape[0], linear.out_features), add)


def add_linear_(out: torch.Tensor, x: torch.Tensor, linear: torch.nn.Linear) -> torch.Tensor:
    """``out += linear(x)`` in place, without autograd: a residual branch's output projection accumulated into the
    tokens it adds to, with no projected copy and no broadcast bias written first."""
    if _linear_applies(x, linear) and out.is_contiguous():
        return cpu_kernel().token_linear(x, linear.weight, _EMPTY if linear.bias is None else linear.bias, out, out)
    if torch.is_autocast_enabled(out.device.type):  # an in-place addmm_ is not autocast's: it refuses mixed dtypes
        return out.add_(linear(x))
    if linear.bias is not None:
        out.add_(linear.bias)
    return out.addmm_(x, linear.weight.t())


def _fusable(x: torch.Tensor, norm: torch.nn.LayerNorm, *layers: torch.nn.Linear) -> bool:
    """(tokens, C) rows, the LayerNorm and the layers (widths multiples of 16) with their biases: what the fused
    kernels of ``pre_norm.cpp`` take."""
    if x.dim() != 2 or not x.is_contiguous() or norm.weight is None or norm.bias is None:
        return False
    return all(layer.bias is not None and _layer_takes(layer) for layer in layers) and _kernels_take(x)


class _NormLinear(torch.autograd.Function):
    """The fused LayerNorm and linear layer as one autograd node, which keeps x alone: the backward recomputes LN(x)
    per block of rows (``norm_linear_backward``), so the normalised tokens are neither written out nor kept.

    Its second output is x itself, passed through for the block's residual to read: that gradient of x comes back to
    this node, whose kernel adds it into dx as it writes it, instead of autograd summing x's two gradients in a pass of
    its own (0.7-1 % of a CPU training step)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, norm_weight: torch.Tensor, norm_bias: torch.Tensor, eps: float,
                weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ctx.save_for_backward(x, norm_weight, norm_bias, weight)
        ctx.eps = eps
        ctx.set_materialize_grads(False)
        return cpu_kernel().norm_linear(x, norm_weight, norm_bias, eps, weight, bias, _EMPTY), x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor | None, grad_x: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
        x, norm_weight, norm_bias, weight = ctx.saved_tensors
        if grad is None:  # the projection unused: x's gradient is the one passed through
            return grad_x, None, None, None, None, None
        dx, dnorm_weight, dnorm_bias, dweight, dbias = cpu_kernel().norm_linear_backward(
            x, grad.contiguous(), norm_weight, norm_bias, ctx.eps, weight,
            _EMPTY if grad_x is None else grad_x.contiguous())
        return dx, dnorm_weight, dnorm_bias, None, dweight, dbias


def norm_linear(x: torch.Tensor, norm: torch.nn.LayerNorm, linear: torch.nn.Linear,
                rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``linear(norm(x))`` of (tokens, C) rows, and the tokens for the block's residual: the fused kernel where it
    applies (the normalised rows never leave L1; under autograd :class:`_NormLinear`, whose second output is x passed
    through), else :func:`token_linear` on the LayerNorm, and x. Without autograd ``rows`` (int64) may name the rows
    of x to take, in that order (a chunk of windows of a map kept in its own order): the kernel gathers them as it
    reads them."""
    tracked = _tracked(x, *norm.parameters(), *linear.parameters())
    if rows is not None and tracked:
        raise ValueError("norm_linear: rows of a map are read without autograd")
    if _fusable(x, norm, linear) and x.shape[1] == linear.in_features:
        if tracked:
            return _NormLinear.apply(x, norm.weight, norm.bias, norm.eps, linear.weight, linear.bias)
        return cpu_kernel().norm_linear(x, norm.weight, norm.bias, norm.eps, linear.weight, linear.bias,
                                        _EMPTY if rows is None else rows), x
    return token_linear(norm(x if rows is None else x.index_select(0, rows)), linear), x


class _Residuals(torch.autograd.Function):
    """A block's two residuals, ``u = x + proj(attended)`` then ``u + mlp(norm(u))``, as one autograd node that keeps
    its inputs alone: the backward (``residuals_backward``) recomputes u, its LayerNorm, the hidden layer and its GELU
    per block of rows in L1 instead of reading five saved activations back from memory. Rows go to ``dest`` (and
    their gradients come from there) where it is not empty."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, attended: torch.Tensor, eps: float, dest: torch.Tensor,
                *weights: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, attended, dest, *weights)
        ctx.eps = eps
        return _fused_residuals(x, attended, eps, weights, torch.empty_like(x), dest)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, attended, dest, wp, bp, norm_weight, norm_bias, w1, b1, w2, b2 = ctx.saved_tensors
        dx, dattended, dwp, dbp, dnorm_weight, dnorm_bias, dw1, db1, dw2, db2 = cpu_kernel().residuals_backward(
            x, attended, grad.contiguous(), wp, bp, norm_weight, norm_bias, ctx.eps, w1, b1, w2, b2, dest)
        return dx, dattended, None, None, dwp, dbp, dnorm_weight, dnorm_bias, dw1, db1, dw2, db2


def _fused_residuals(x: torch.Tensor, attended: torch.Tensor, eps: float, weights: tuple[torch.Tensor, ...],
                     out: torch.Tensor, dest: torch.Tensor, in_map: bool = False) -> torch.Tensor:
    """The kernel on ``weights`` (proj's weight and bias, the norm's, linear1's, linear2's) into ``out``, rows to
    ``dest`` (empty: in place); ``in_map``: x and out are maps whose rows ``dest`` attended's are."""
    wp, bp, norm_weight, norm_bias, w1, b1, w2, b2 = weights
    return cpu_kernel().residuals(x, attended, wp, bp, norm_weight, norm_bias, eps, w1, b1, w2, b2, out, dest, in_map)


def residuals(x: torch.Tensor, attended: torch.Tensor, proj: torch.nn.Linear, norm: torch.nn.LayerNorm,
              mlp: torch.nn.Module, dest: torch.Tensor | None = None, rows: torch.Tensor | None = None,
              into: torch.Tensor | None = None) -> torch.Tensor:
    """A Swin block's two residuals on its tokens ``x``: ``u = x + proj(attended)``, then ``u + mlp(norm(u))``, ``mlp``
    a GELU feed-forward (MONAI's ``MLPBlock``: ``linear1``, GELU, ``linear2``); row r of the result at row ``dest[r]``
    where given (a permutation: the next block's order, see :func:`~pipeline.networks.blocks.windows.place_rows`).

    One fused kernel where it applies (see ``pre_norm.cpp``), which writes each row to its ``dest`` as it goes: without
    grad mode and ``dest`` in place, into ``x``; else into a new tensor, with grad mode as :class:`_Residuals`.
    Without grad mode ``rows`` (int64) may name the rows of x that ``attended``'s are (x a map in its own order, see
    :func:`~pipeline.networks.blocks.swin.over_chunks`): the kernel reads them there and writes them to the same rows of
    ``into``, a map like x (x itself where not given). Elsewhere :func:`add_linear_` and :func:`linear_gelu` in place,
    or :func:`token_linear`, then ``dest``'s scatter."""
    first, second = mlp.linear1, mlp.linear2
    weights = (proj.weight, proj.bias, norm.weight, norm.bias, first.weight, first.bias, second.weight, second.bias)
    in_place = not torch.is_grad_enabled() and dest is None  # as the blocks' chunks are (see swin.over_chunks)
    if rows is not None and not in_place:
        raise ValueError("residuals: rows of a map are written in place, without autograd and dest")
    into = x if into is None else into
    fused = _fusable(x, norm, proj, first, second) and attended.is_contiguous()
    if fused and rows is not None and into.is_contiguous():
        return _fused_residuals(x, attended, norm.eps, weights, into, rows, in_map=True)
    if fused and rows is None and attended.shape == x.shape:
        if in_place:
            return _fused_residuals(x, attended, norm.eps, weights, x, _EMPTY)
        if not torch.is_grad_enabled():
            return _fused_residuals(x, attended, norm.eps, weights, torch.empty_like(x), dest)
        return _Residuals.apply(x, attended, norm.eps, _EMPTY if dest is None else dest, *weights)
    if not in_place:
        x = token_linear(attended, proj, residual=x)
        return place_rows(token_linear(linear_gelu(norm(x), first), second, residual=x), dest)
    tokens = x if rows is None else x.index_select(0, rows)  # in place on x, or on a map's rows written back
    add_linear_(tokens, attended, proj)
    add_linear_(tokens, linear_gelu(norm(tokens), first), second)
    return tokens if rows is None else into.index_copy_(0, rows, tokens)


def linear_gelu(x: torch.Tensor, linear: torch.nn.Linear) -> torch.Tensor:
    """GELU(linear(x)) (erf form) of (tokens, C) rows: the GELU kernel where it applies, ATen's otherwise.

    The linear layer runs by :func:`token_linear` where that applies. Without autograd the GELU then overwrites the
    layer's output in place, and where the token kernel does not apply the layer runs as a bare GEMM whose bias the
    GELU kernel adds: no broadcast bias is written out first and no second hidden layer is allocated.
    """
    if x.dim() == 2 and _kernels_take(x):
        if _tracked(x, *linear.parameters()):
            return _Gelu.apply(token_linear(x, linear))
        if _linear_applies(x, linear):  # the kernel adds the bias
            hidden, bias = token_linear(x, linear), _EMPTY
        else:
            hidden, bias = torch.mm(x, linear.weight.t()), _EMPTY if linear.bias is None else linear.bias
        return cpu_kernel().gelu(hidden, bias, hidden)
    return F.gelu(linear(x))
