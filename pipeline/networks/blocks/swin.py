"""Swin Transformer blocks and stages for 2-D feature maps, run window-chunk by window-chunk.

A block is MONAI's ``SwinTransformerBlock`` in 2-D (pre-norm residual window attention with a
learned relative position bias, shifted windows with their mask, a GELU feed-forward) with the
same parameters under the same names, so a checkpoint of either loads into the other and both
give the same numbers. What differs is the layout (see :mod:`pipeline.networks.blocks.windows`):
each block runs its layers over chunks of whole windows in a cached window order (on a map kept in
raster order in inference, on tokens kept in window order under autograd), and attention is the CPU
kernel or ``scaled_dot_product_attention`` with the position bias broadcast over the windows that
need no mask. Under ``torch.jit.script`` the same blocks run MONAI's plain
layout instead (see the end of :mod:`~pipeline.networks.blocks.windows`), so one module definition
exports to TorchScript for maps of any size.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from monai.networks.blocks import MLPBlock
from monai.networks.nets.swin_unetr import WindowAttention
from torch import nn

from pipeline.networks.blocks.cpu_kernels import (
    TokenLayerNorm,
    kernel_applies,
    norm_linear,
    residuals,
    split_projections,
    window_attention,
)
from pipeline.networks.blocks.windows import (
    Chunk,
    Regather,
    Windows,
    WindowOrder,
    from_windows,
    place_rows,
    shift_mask,
    to_windows,
    window_shift,
    windows_for,
)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad the last two dims of ``x`` at the bottom/right up to a multiple of ``multiple``.

    Reflection keeps image statistics at the border (zero padding would add a dark frame that
    windows near the edge attend to); maps too small to reflect fall back to edge replication.
    Callers crop back with ``[..., :h, :w]``.
    """
    h, w = x.shape[-2:]
    pad_h, pad_w = -h % multiple, -w % multiple
    if pad_h == 0 and pad_w == 0:
        return x
    mode = "reflect" if pad_h < h and pad_w < w else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)


class ChunkedWindowAttention(WindowAttention):
    """MONAI's ``WindowAttention`` (its projections, bias table and index) on chunks of windows.

    ``attend`` takes Q from one token set and K, V from another, so the same module serves
    self-attention (Swin blocks) and the K/V swap of CMIFM.
    """

    def position_bias(self, window_tokens: int) -> torch.Tensor:
        """B: (heads, N, N), gathered from the learned table once per block call."""
        index = self.relative_position_index[:window_tokens, :window_tokens].reshape(-1)
        table = self.relative_position_bias_table[index]
        return table.view(window_tokens, window_tokens, self.num_heads).permute(2, 0, 1)

    def heads(self, qkv: torch.Tensor, window_tokens: int) -> torch.Tensor:
        """The Q, K, V projection ``qkv`` (windows * N, 3 C) of tokens as one (windows, N, 3, heads, head_dim) view."""
        return qkv.view(-1, window_tokens, 3, self.num_heads, qkv.shape[-1] // (3 * self.num_heads))

    def attend(self, queries: torch.Tensor, keys_values: torch.Tensor, bias: torch.Tensor,
               mask: torch.Tensor | None) -> torch.Tensor:
        """softmax(Q K^T / sqrt(d) + B [+ mask]) V as tokens (windows * N, C), before the output projection
        ``proj``, which the block folds into its residual (see :meth:`SwinBlock.residuals`). Q comes from the
        projection ``queries``, K and V from ``keys_values`` (the same one in self-attention; see :meth:`heads`).

        On the CPU, the kernel of :mod:`~pipeline.networks.blocks.cpu_kernels` where it applies;
        elsewhere SDPA. Where the CPU kernel cannot be built and autograd is on, the learned bias B
        needs a gradient, which SDPA's CPU kernel does not give: it then falls back to a composite that
        also scans every score row for -inf (a fifth of a CPU training step), so the three ops are
        written out there. TorchScript cannot call the kernel: a scripted model runs SDPA.
        """
        windows, tokens, _, heads, head_dim = queries.shape
        if not torch.jit.is_scripting():
            if kernel_applies(queries):
                out = window_attention(queries, keys_values, bias, mask, self.scale)  # (windows, N, heads, head_dim)
                return out.view(windows * tokens, heads * head_dim)
        if mask is not None and mask.shape[0] < windows:  # the masks of the last windows only: the others see all
            mask = torch.cat([mask.new_zeros(windows - mask.shape[0], tokens, tokens), mask])
        q, k, v = split_projections(queries, keys_values)
        attn_mask = bias.unsqueeze(0) if mask is None else bias.unsqueeze(0) + mask.unsqueeze(1)
        attn_mask = attn_mask.to(q.dtype)
        if torch.is_grad_enabled() and q.device.type == "cpu":
            scores = torch.baddbmm(attn_mask.expand(windows, -1, -1, -1).reshape(-1, tokens, tokens),
                                   q.reshape(-1, tokens, head_dim), k.reshape(-1, tokens, head_dim).transpose(1, 2),
                                   alpha=self.scale)
            out = torch.bmm(scores.softmax(-1), v.reshape(-1, tokens, head_dim)).view(q.shape)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=self.scale)
        return out.transpose(1, 2).reshape(windows * tokens, heads * head_dim)


class SwinBlock(nn.Module):
    """One STB: Z' = MSA(LN(Z)) + Z; Z = FFN(LN(Z')) + Z', on tokens in this block's window order.

    Without autograd the tokens are a map in raster order, which the result overwrites (see :func:`over_chunks`).
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, shifted: bool, mlp_ratio: float) -> None:
        super().__init__()
        self.shifted = shifted
        self.norm1 = TokenLayerNorm(dim)
        self.attn = ChunkedWindowAttention(dim, num_heads, (window_size, window_size), qkv_bias=True)
        self.norm2 = TokenLayerNorm(dim)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio), act="GELU", dropout_mode="swin")

    def project(self, x: torch.Tensor, window_tokens: int,
                rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Q, K, V of LN(x) for tokens ``x`` (or x's ``rows``, see :func:`over_chunks`; see
        :meth:`ChunkedWindowAttention.heads`), and the tokens for :meth:`residuals`: one fused kernel on the CPU
        (:func:`~pipeline.networks.blocks.cpu_kernels.norm_linear`), whose autograd node also passes x through, so
        that its backward adds both of x's gradients."""
        if torch.jit.is_scripting():
            return self.attn.heads(self.attn.qkv(self.norm1(x)), window_tokens), x
        qkv, tokens = norm_linear(x, self.norm1, self.attn.qkv, rows)
        return self.attn.heads(qkv, window_tokens), tokens

    def residuals(self, x: torch.Tensor, attended: torch.Tensor, dest: torch.Tensor | None = None,
                  rows: torch.Tensor | None = None, into: torch.Tensor | None = None) -> torch.Tensor:
        """Z' = Z + proj(attended), then Z' + FFN(LN(Z')), from the attention's output before its projection; row r
        of the result at row ``dest[r]`` where given (see :func:`~pipeline.networks.blocks.windows.place_rows`).

        Both residuals and the feed-forward with its LayerNorm are one fused kernel where it applies
        (:func:`~pipeline.networks.blocks.cpu_kernels.residuals`): without autograd (and not under TorchScript, whose
        ``x`` may be a view of the stage's input map) it writes into ``x`` itself, the block's own tokens (or x's
        ``rows`` into those of ``into``: see :func:`over_chunks`), so no projected copy is made (at 16-32 channels
        such copies cost what the products do); under autograd it is one node that keeps ``x`` and ``attended`` alone
        and writes its rows to ``dest`` as it goes.
        """
        if torch.jit.is_scripting():
            x = x + self.attn.proj(attended)
            return place_rows(x + self.mlp(self.norm2(x)), dest)
        return residuals(x, attended, self.attn.proj, self.norm2, self.mlp, dest, rows, into)

    def step(self, x: torch.Tensor, bias: torch.Tensor, mask: torch.Tensor | None, window_tokens: int,
             dest: torch.Tensor | None = None, rows: torch.Tensor | None = None,
             into: torch.Tensor | None = None) -> torch.Tensor:
        """The block on tokens ``x`` (windows * N, C) of whole windows, or on x's ``rows`` (into ``into``'s, see
        :func:`over_chunks`), ``mask`` on its last windows (see :class:`~pipeline.networks.blocks.windows.Chunk`) or
        None; result rows to ``dest`` (see :meth:`residuals`)."""
        qkv, x = self.project(x, window_tokens, rows)
        return self.residuals(x, self.attn.attend(qkv, qkv, bias, mask), dest, rows, into)

    @torch.jit.unused  # the eager layout; TorchScript runs :meth:`on_map`
    def forward(self, z: torch.Tensor, order: WindowOrder, then: Regather | None = None,
                into: tuple[torch.Tensor] | None = None) -> torch.Tensor:
        """The block on tokens ``z`` in ``order``; its result regathered by ``then`` where given, or written into
        ``into`` (see :func:`over_chunks`)."""
        bias = self.attn.position_bias(order.window_tokens)

        def run(chunk: Chunk, x: torch.Tensor, dest: torch.Tensor | None = None, rows: torch.Tensor | None = None,
                into: tuple[torch.Tensor] | None = None) -> tuple[torch.Tensor]:
            own = None if into is None else into[0]
            return (self.step(x, bias, chunk.mask, order.window_tokens, dest, rows, own),)

        (z,) = over_chunks(order, run, z, then=then, into=into)
        return z

    def on_map(self, z: torch.Tensor, window_size: int) -> torch.Tensor:
        """The block on a (B, H, W, C) map in MONAI's layout: what TorchScript runs."""
        shift = window_shift(z.shape[1], z.shape[2], window_size, self.shifted)
        tokens = window_size * window_size
        x = self.step(to_windows(z, window_size, shift), self.attn.position_bias(tokens),
                      shift_mask(z, window_size, shift), tokens)
        return from_windows(x, z.shape, window_size, shift)


def over_chunks(order: WindowOrder, step: Callable[..., tuple[torch.Tensor, ...]], *streams: torch.Tensor,
                then: Regather | None = None, into: tuple[torch.Tensor, ...] | None = None) -> tuple[torch.Tensor, ...]:
    """``step(chunk, *streams or their slices)`` on each chunk of ``order``: one result per token stream, for all its
    tokens, regathered by ``then`` where given.

    A block's output at a window depends on that window alone, and chunks are whole windows. So without autograd the
    streams are maps in their own (raster) order, which the blocks overwrite chunk by chunk (or write into the maps
    ``into``, a stage's own, from its input maps): ``step`` gets the streams, ``rows``, the rows of the chunk's
    windows (``order.order``'s slice), and ``into``, and its kernels read and write those rows in place. A map then
    stays in one order from a stage's first block to its last, with no gather into, between or out of its blocks
    (they took 7-10 % of a CPU forward at 512 x 512), and is held once. With autograd the inputs are kept and each
    chunk's results concatenated; with every window in one chunk (the CPU's), ``step`` gets ``dest=then.inverse``
    and writes its results in ``then``'s order itself: the CPU kernel does so as it writes them, for no gather (a
    training step 1.01-1.03x); elsewhere ``then`` gathers the results.
    """
    if not torch.is_grad_enabled():
        for chunk in order.chunks:
            step(chunk, *streams, rows=order.order[chunk.start:chunk.stop], into=into)
        return streams if into is None else into
    if len(order.chunks) == 1:
        return step(order.chunks[0], *streams, dest=None if then is None else then.inverse)
    pieces = []
    for chunk in order.chunks:
        whole = chunk.start == 0 and chunk.stop == streams[0].shape[0]  # no slice, whose gradient is zero-filled
        pieces.append(step(chunk, *(streams if whole else tuple(z[chunk.start:chunk.stop] for z in streams))))
    results = tuple(torch.cat(column) for column in zip(*pieces))
    return results if then is None else tuple(then(z) for z in results)


def alternate_windows(blocks: nn.ModuleList, windows: Windows, step, *streams: torch.Tensor) -> list[torch.Tensor]:
    """Run ``step(block, order, then, *streams)`` for each block on the streams of :meth:`Windows.enter`, ``then``
    regathering its results into the next block's order under autograd (see
    :meth:`~pipeline.networks.blocks.windows.Windows.after`). Without autograd the first block reads the input maps
    and writes maps of the stage's own (``into``), which the others overwrite: all in raster order (see
    :func:`over_chunks`). The last block's come out in the map's raster order."""
    if not torch.is_grad_enabled() and len(blocks):
        maps = tuple(torch.empty_like(z) for z in streams)
        for block in blocks:
            streams = step(block, windows.order(block.shifted), None, *streams, into=maps)
        return list(streams)
    for block, following in zip(blocks, [*blocks[1:], None]):
        then = windows.after(block.shifted, None if following is None else following.shifted)
        streams = step(block, windows.order(block.shifted), then, *streams)
    return list(streams)


class SwinStage(nn.Module):
    """``depth`` Swin blocks alternating W-MSA and SW-MSA, on (B, C, H, W) maps of any size.

    Sides that are not window multiples are reflect-padded and cropped back (the generator pads
    its inputs first, so inside it no padding happens here).
    """

    def __init__(
        self, dim: int, depth: int, num_heads: int = 6, window_size: int = 8, mlp_ratio: float = 2.0
    ) -> None:
        super().__init__()
        self.window_size = window_size
        self.blocks = nn.ModuleList(
            SwinBlock(dim, num_heads, window_size, shifted=bool(index % 2), mlp_ratio=mlp_ratio)
            for index in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        x = pad_to_multiple(x, self.window_size)
        if torch.jit.is_scripting():
            x = self._on_map(x)
        else:
            x = self._in_window_order(x)
        return x[..., :h, :w]

    def _in_window_order(self, x: torch.Tensor) -> torch.Tensor:
        """The blocks on the map's tokens, chunk by chunk of windows: eager mode."""
        windows = windows_for(x, self.window_size)
        z = windows.enter(x, self.blocks[0].shifted)
        (z,) = alternate_windows(self.blocks, windows,
                                 lambda block, order, then, z, into=None: (block(z, order, then, into),), z)
        return windows.as_map(z, x.shape)

    def _on_map(self, x: torch.Tensor) -> torch.Tensor:
        """The blocks on the map in MONAI's layout: what TorchScript runs."""
        z = x.permute(0, 2, 3, 1)
        for block in self.blocks:
            z = block.on_map(z, self.window_size)
        return z.permute(0, 3, 1, 2)
