"""Token orders of (shifted) window attention, computed once per map size and reused by every block.

Window attention is local: every layer of a Swin block acts on one token at a time except the
attention, which acts within one window. So a stage keeps its feature map as a (tokens, C) matrix
and its blocks run over bounded chunks of whole windows in *window order* (the tokens of each window
side by side), instead of over full-slice (or full-batch) tensors that stream through memory, and
through freshly mapped pages, at every layer. In inference the map stays in raster order and each
chunk's rows are read and written where they are (``WindowOrder.order`` names them); under autograd
the tokens are kept in window order, and the cyclic shift and the window partition of MONAI's blocks
(roll, permute, copy; and back) become one precomputed gather between consecutive blocks.

Windows whose shifted content wraps around the map border (the last row and column of windows)
are placed last, so only they carry the SW-MSA mask; every other window shares the relative
position bias, broadcast. Window and shift sizes follow MONAI's ``get_window_size`` (a side no
longer than the window keeps the window at that side and drops the shift), and the mask is MONAI's
``compute_mask``, so the numbers are those of MONAI's ``SwinTransformerBlock``.

A model compiled by ``torch.jit.script`` runs MONAI's own layout instead, with the small helpers at
the end of this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch
from monai.networks.nets.swin_unetr import compute_mask, get_window_size

CPU_CHUNK_TOKENS = 16384
"""Tokens per chunk on the CPU: 256 windows of 8 x 8 (a quarter of a 256 x 256 slice); 1 MB per activation at width 16.

Measured at 512 x 512 on 2 cores once freed memory stays in the process (:mod:`pipeline.networks.cpu_allocator`):
16384 tokens ran the shipped model in 430 ms and the paper-depth one in 1.71 s, against 490 ms and 1.87 s with
32768 (whose Q/K/V of 12 MB outgrow the cache) and 510 ms and 1.91 s with 4096 (more, smaller ops); 8192 was
as fast, on a quiet CPU and on a busy one. Before that allocator setting, smaller chunks lost on a busy CPU.
"""


CPU_PIXELS_PER_FORWARD = 256 * 256
"""Pixels of a batch that one CPU inference forward takes at most: larger batches go slice by slice.

A forward's full-map steps (the convolutions; the gathers between window orders, before the maps stayed in raster
order) slow down per pixel once the maps outgrow the cache: 8 slices of 256 x 256 in one forward took 1.56 times as
long per slice as one slice did, and with the raster maps 1.02 (shipped) and 1.09 times (paper depth; 4 slices a
forward the same). A slice is never split, since windows see their neighbours.
"""


@dataclass(frozen=True)
class Chunk:
    """Tokens ``[start, stop)`` of the window order, and the SW-MSA masks (M, N, N) of their last M windows (or None):
    the masked windows of an order come last."""

    start: int
    stop: int
    mask: torch.Tensor | None


@dataclass(frozen=True)
class WindowOrder:
    """One block's token order: ``order[i]`` is the raster index of window-order token ``i``."""

    window_tokens: int
    order: torch.Tensor
    inverse: torch.Tensor
    chunks: tuple[Chunk, ...]


def _chunks(start: int, stop: int, per_chunk: int, window_tokens: int, mask: torch.Tensor | None) -> list[Chunk]:
    """Split windows ``[start, stop)`` (in tokens) into chunks; ``mask`` (windows, N, N) covers that range."""
    chunks = []
    for first in range(start, stop, per_chunk):
        last = min(stop, first + per_chunk)
        window_slice = slice((first - start) // window_tokens, (last - start) // window_tokens)
        chunks.append(Chunk(first, last, None if mask is None else mask[window_slice]))
    return chunks


def _window_order(batch: int, height: int, width: int, window_size: int, shifted: bool, device: torch.device,
                  chunk_tokens: int | None, whole: bool) -> WindowOrder:
    window, shift = get_window_size((height, width), (window_size,) * 2, (window_size // 2 if shifted else 0,) * 2)
    if height % window[0] or width % window[1]:
        raise ValueError(f"window attention needs sides that are window multiples, got {height}x{width}")
    raster = torch.arange(batch * height * width, device=device).view(batch, height, width)
    if any(shift):
        raster = torch.roll(raster, shifts=(-shift[0], -shift[1]), dims=(1, 2))
    rows, cols = height // window[0], width // window[1]
    tokens = window[0] * window[1]
    per_window = raster.view(batch, rows, window[0], cols, window[1]).permute(0, 1, 3, 2, 4).reshape(batch, -1, tokens)
    masked = torch.zeros(rows * cols, dtype=torch.bool, device=device)
    mask = None
    if any(shift):
        mask = compute_mask([height, width], window, shift, device)
        masked = mask.flatten(1).ne(0).any(1)
    plain_windows, masked_windows = per_window[:, ~masked].flatten(), per_window[:, masked].flatten()
    order = torch.cat([plain_windows, masked_windows])
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(order.numel(), device=device)
    tail = mask[masked].repeat(batch, 1, 1) if masked_windows.numel() else None
    if whole:
        return WindowOrder(tokens, order, inverse, (Chunk(0, order.numel(), tail),))
    per_chunk = max(tokens, (chunk_tokens or order.numel()) // tokens * tokens)
    split = plain_windows.numel()
    chunks = _chunks(0, split, per_chunk, tokens, None)
    if tail is not None:
        chunks += _chunks(split, order.numel(), per_chunk, tokens, tail)
    return WindowOrder(tokens, order, inverse, tuple(chunks))


class _RowPermutation(torch.autograd.Function):
    """``z[index]`` for a permutation ``index`` of z's rows: its gradient is the inverse gather, where
    ``index_select``'s backward scatter-adds into zeros (a tenth of a CPU training step between the window orders)."""

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, index: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(inverse)
        return z.index_select(0, index)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (inverse,) = ctx.saved_tensors
        return grad.index_select(0, inverse), None, None


def permute_rows(z: torch.Tensor, index: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    """Rows of ``z`` in the order ``index``, a permutation whose inverse is ``inverse``."""
    if torch.is_grad_enabled() and z.requires_grad:
        return _RowPermutation.apply(z, index, inverse)
    return z.index_select(0, index)


def place_rows(rows: torch.Tensor, dest: torch.Tensor | None) -> torch.Tensor:
    """Row r of ``rows`` at row ``dest[r]`` of a new tensor (``rows`` itself where ``dest`` is None): what a kernel that
    writes its rows to ``dest`` gives, as a scatter where none does."""
    if dest is None:
        return rows
    return torch.empty_like(rows).index_copy_(0, dest, rows)


@dataclass(frozen=True)
class Regather:
    """A permutation of token rows, ``z[index]``: row r of z lands at row ``inverse[r]``. A block whose last kernel
    writes its rows straight there (``dest`` of :func:`~pipeline.networks.blocks.cpu_kernels.residuals`) saves the
    gather."""

    index: torch.Tensor
    inverse: torch.Tensor

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        return permute_rows(z, self.index, self.inverse)


@dataclass(frozen=True)
class Windows:
    """Both token orders of one (batch, height, width) map and the gathers into, between and out of them."""

    regular: WindowOrder
    shifted: WindowOrder
    to_shifted: torch.Tensor
    to_regular: torch.Tensor

    def order(self, shifted: bool) -> WindowOrder:
        return self.shifted if shifted else self.regular

    def enter(self, x: torch.Tensor, shifted: bool) -> torch.Tensor:
        """(B, C, H, W) -> (B * H * W, C) tokens: under autograd a stage's own, in the window order; else in raster
        order, a view of a channels-last map, which a stage's first block reads (see
        :func:`~pipeline.networks.blocks.swin.alternate_windows`)."""
        tokens = x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])
        if not torch.is_grad_enabled():
            return tokens
        order = self.order(shifted)
        return permute_rows(tokens, order.order, order.inverse)

    def after(self, shifted: bool, following: bool | None) -> Regather | None:
        """What follows a block in order ``shifted`` under autograd: the gather into the ``following`` block's order
        (None where it is the same), or into the map's raster order after a stage's last block (``following`` None)."""
        if following is None:
            order = self.order(shifted)
            return Regather(order.inverse, order.order)
        if following == shifted:
            return None
        if following:
            return Regather(self.to_shifted, self.to_regular)
        return Regather(self.to_regular, self.to_shifted)

    @staticmethod
    def as_map(tokens: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        """Tokens in raster order as the (B, C, H, W) map of ``shape``, in channels-last memory layout (a view)."""
        b, c, h, w = shape
        return tokens.view(b, h, w, c).permute(0, 3, 1, 2)


@lru_cache(maxsize=16)
def _cached_windows(batch: int, height: int, width: int, window_size: int, device: torch.device,
                    chunk_tokens: int | None, whole: bool) -> Windows:
    # Normal tensors even when first asked for under inference mode: training reuses the cache.
    with torch.inference_mode(False):
        return _build_windows(batch, height, width, window_size, device, chunk_tokens, whole)


def _build_windows(batch: int, height: int, width: int, window_size: int, device: torch.device,
                   chunk_tokens: int | None, whole: bool) -> Windows:
    regular, shifted = (
        _window_order(batch, height, width, window_size, flag, device, chunk_tokens, whole) for flag in (False, True)
    )
    return Windows(regular, shifted, regular.inverse[shifted.order], shifted.inverse[regular.order])


def windows_for(x: torch.Tensor, window_size: int) -> Windows:
    """The cached :class:`Windows` of map ``x`` (B, C, H, W): chunked for CPU inference, whole otherwise.

    Chunks pay off where a block overwrites its tokens chunk by chunk, without autograd. Under autograd
    every activation is kept anyway and the chunks' results would be concatenated (their gradients
    zero-filled to the whole map and summed), so on the CPU, whose attention kernel masks a block's
    trailing windows only, all windows are one chunk: a training iteration 1.02-1.03x faster (shipped model, 64
    and 128 crops; 1.005x at paper depth) than with one chunk of plain windows and one of masked ones, which
    in turn took 280 ms against 394 in 16384-token chunks. On a GPU
    the plain windows stay a chunk of their own, whose position bias SDPA broadcasts with no mask.
    """
    chunked = x.device.type == "cpu" and not torch.is_grad_enabled()
    chunk_tokens = CPU_CHUNK_TOKENS if chunked else None
    whole = x.device.type == "cpu" and torch.is_grad_enabled()
    return _cached_windows(x.shape[0], x.shape[2], x.shape[3], window_size, x.device, chunk_tokens, whole)


# The plain layout TorchScript runs (``torch.jit.script`` cannot compile the cached orders above nor MONAI's
# ``get_window_size``, ``window_reverse`` and ``compute_mask``): each block rolls its (B, H, W, C) map, cuts it
# into windows and back, as MONAI's blocks do, and masks every window of a shifted block (a mask of zeros
# changes no score). Sides are window multiples, as the stages pad them.


def window_shift(height: int, width: int, window_size: int, shifted: bool) -> list[int]:
    """The cyclic shift of each side: half a window in shifted blocks, none on a side one window long
    (MONAI's ``get_window_size`` on sides that are window multiples)."""
    half = window_size // 2 if shifted else 0
    return [half if height > window_size else 0, half if width > window_size else 0]


def to_windows(z: torch.Tensor, window_size: int, shift: list[int]) -> torch.Tensor:
    """(B, H, W, C) map -> (B * windows * N, C) tokens of its shifted windows: MONAI's roll, ``window_partition``."""
    if shift[0] or shift[1]:
        z = torch.roll(z, shifts=(-shift[0], -shift[1]), dims=(1, 2))
    b, h, w, c = z.shape
    return z.reshape(b, h // window_size, window_size, w // window_size, window_size, c).transpose(2, 3).reshape(-1, c)


def from_windows(tokens: torch.Tensor, shape: list[int], window_size: int, shift: list[int]) -> torch.Tensor:
    """Tokens of :func:`to_windows` back to the (B, H, W, C) map of ``shape``."""
    b, h, w, c = shape
    z = tokens.view(b, h // window_size, w // window_size, window_size, window_size, c).transpose(2, 3).reshape(shape)
    if shift[0] or shift[1]:
        z = torch.roll(z, shifts=(shift[0], shift[1]), dims=(1, 2))
    return z


def _regions(size: int, window_size: int, shift: int, device: torch.device) -> torch.Tensor:
    """Region of each row (or column) of the shifted map: 0 before the last window, 1 in it, 2 where it wrapped."""
    region = torch.zeros(size, dtype=torch.long, device=device)
    if shift:
        region[size - window_size:] = 1
        region[size - shift:] = 2
    return region


def shift_mask(z: torch.Tensor, window_size: int, shift: list[int]) -> torch.Tensor | None:
    """The SW-MSA mask of every window of map ``z`` (B, H, W, C) as (B * windows, N, N), None without a shift:
    -100 between tokens of different regions, as MONAI's ``compute_mask``."""
    if not (shift[0] or shift[1]):
        return None
    b, h, w, _ = z.shape
    regions = _regions(h, window_size, shift[0], z.device)[:, None] * 3 + _regions(w, window_size, shift[1], z.device)
    labels = to_windows(regions[None, :, :, None], window_size, [0, 0]).view(-1, window_size * window_size)
    apart = labels[:, None, :] != labels[:, :, None]
    return torch.zeros(apart.shape, device=z.device).masked_fill(apart, -100.0).repeat(b, 1, 1)
