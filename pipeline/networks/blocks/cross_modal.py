"""Cross-modal fusion of the CT and PET feature streams: CMIFM and its CNN stand-in.

In each CMIFM block both streams are projected to Q, K, V with their own weights, then K and V
are swapped inside (shifted) windows:
Attention_CT = softmax(Q_CT K_PET^T / sqrt(d) + B_CT) V_PET, and symmetrically for PET,
so each stream reads the other modality while keeping its own content through the residual.
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.networks.blocks.conv import conv_block
from pipeline.networks.blocks.cpu_kernels import cross_attention, kernel_applies
from pipeline.networks.blocks.swin import SwinBlock, alternate_windows, over_chunks, pad_to_multiple
from pipeline.networks.blocks.windows import (
    Chunk,
    Regather,
    WindowOrder,
    from_windows,
    shift_mask,
    to_windows,
    window_shift,
    windows_for,
)


class CrossModalBlock(nn.Module):
    """One CMIFM fusion block on the CT and PET tokens, both in this block's window order.

    Each stream is a :class:`SwinBlock` (its own norms, Q/K/V projections, bias B and FFN) whose
    attention reads the other stream's keys and values; the bias belongs to the query's stream.
    Without autograd the streams are maps in raster order, which the results overwrite (see :func:`over_chunks`).
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, shifted: bool, mlp_ratio: float) -> None:
        super().__init__()
        self.shifted = shifted
        self.shift_size = window_size // 2 if shifted else 0
        self.ct = SwinBlock(dim, num_heads, window_size, shifted, mlp_ratio)
        self.pet = SwinBlock(dim, num_heads, window_size, shifted, mlp_ratio)

    def biases(self, window_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Each stream's position bias B, gathered once per block call."""
        return self.ct.attn.position_bias(window_tokens), self.pet.attn.position_bias(window_tokens)

    def step(self, x_ct: torch.Tensor, x_pet: torch.Tensor, biases: tuple[torch.Tensor, torch.Tensor],
             mask: torch.Tensor | None, window_tokens: int, dest: torch.Tensor | None = None,
             rows: torch.Tensor | None = None,
             into: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The block on tokens (windows * N, C) of the same whole windows of both streams, or on their ``rows`` (into
        ``into``'s, see :func:`over_chunks`); result rows to ``dest`` (see :meth:`SwinBlock.residuals`)."""
        (qkv_ct, x_ct), (qkv_pet, x_pet) = (self.ct.project(x_ct, window_tokens, rows),
                                            self.pet.project(x_pet, window_tokens, rows))
        attended_ct, attended_pet = self.attend(qkv_ct, qkv_pet, biases, mask)
        into_ct, into_pet = (None, None) if into is None else into
        return (self.ct.residuals(x_ct, attended_ct, dest, rows, into_ct),
                self.pet.residuals(x_pet, attended_pet, dest, rows, into_pet))

    def attend(self, qkv_ct: torch.Tensor, qkv_pet: torch.Tensor, biases: tuple[torch.Tensor, torch.Tensor],
               mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Each stream's queries on the other's keys and values, as tokens (windows * N, C): both directions in one
        call of the CPU kernel where it applies (see :func:`cross_attention`), else each stream's own attend."""
        bias_ct, bias_pet = biases
        if not torch.jit.is_scripting():
            if kernel_applies(qkv_ct):
                both = cross_attention(qkv_ct, qkv_pet, bias_ct, bias_pet, mask, self.ct.attn.scale)
                return both[0].flatten(2).flatten(0, 1), both[1].flatten(2).flatten(0, 1)
        return (self.ct.attn.attend(qkv_ct, qkv_pet, bias_ct, mask),
                self.pet.attn.attend(qkv_pet, qkv_ct, bias_pet, mask))

    @torch.jit.unused  # the eager layout; TorchScript runs :meth:`on_maps`
    def forward(self, ct: torch.Tensor, pet: torch.Tensor, order: WindowOrder, then: Regather | None = None,
                into: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The block on both streams' tokens in ``order``; its results regathered by ``then`` where given, or written
        into ``into`` (see :func:`over_chunks`)."""
        biases = self.biases(order.window_tokens)

        def run(chunk: Chunk, x_ct: torch.Tensor, x_pet: torch.Tensor, dest: torch.Tensor | None = None,
                rows: torch.Tensor | None = None,
                into: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
            return self.step(x_ct, x_pet, biases, chunk.mask, order.window_tokens, dest, rows, into)

        return over_chunks(order, run, ct, pet, then=then, into=into)

    def on_maps(self, ct: torch.Tensor, pet: torch.Tensor, window_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The block on (B, H, W, C) maps in MONAI's layout: what TorchScript runs."""
        shift = window_shift(ct.shape[1], ct.shape[2], window_size, self.shifted)
        tokens = window_size * window_size
        x_ct, x_pet = self.step(to_windows(ct, window_size, shift), to_windows(pet, window_size, shift),
                                self.biases(tokens), shift_mask(ct, window_size, shift), tokens)
        return from_windows(x_ct, ct.shape, window_size, shift), from_windows(x_pet, pet.shape, window_size, shift)


class CrossModalFusion(nn.Module):
    """CMIFM: ``depth`` fusion blocks alternating regular/shifted windows, then a 3x3 conv per stream.

    (B, C, H, W) in and out; sides that are not window multiples are reflect-padded and cropped back.
    """

    def __init__(
        self, dim: int, depth: int = 4, num_heads: int = 6, window_size: int = 8, mlp_ratio: float = 2.0
    ) -> None:
        super().__init__()
        self.window_size = window_size
        self.blocks = nn.ModuleList(
            CrossModalBlock(dim, num_heads, window_size, shifted=bool(index % 2), mlp_ratio=mlp_ratio)
            for index in range(depth)
        )
        self.conv_ct = nn.Conv2d(dim, dim, kernel_size=3, padding=1)
        self.conv_pet = nn.Conv2d(dim, dim, kernel_size=3, padding=1)

    def forward(self, ct: torch.Tensor, pet: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = ct.shape[-2:]
        ct, pet = pad_to_multiple(ct, self.window_size), pad_to_multiple(pet, self.window_size)
        if torch.jit.is_scripting():
            ct, pet = self._on_maps(ct, pet)
        else:
            ct, pet = self._in_window_order(ct, pet)
        return self.conv_ct(ct[..., :h, :w]), self.conv_pet(pet[..., :h, :w])

    def _in_window_order(self, ct: torch.Tensor, pet: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The blocks on both maps' tokens, chunk by chunk of windows: eager mode."""
        windows = windows_for(ct, self.window_size)
        first = self.blocks[0].shifted
        ct_tokens, pet_tokens = alternate_windows(
            self.blocks, windows, lambda block, order, then, a, b, into=None: block(a, b, order, then, into),
            windows.enter(ct, first), windows.enter(pet, first),
        )
        return windows.as_map(ct_tokens, ct.shape), windows.as_map(pet_tokens, pet.shape)

    def _on_maps(self, ct: torch.Tensor, pet: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The blocks on both maps in MONAI's layout: what TorchScript runs."""
        ct, pet = ct.permute(0, 2, 3, 1), pet.permute(0, 2, 3, 1)
        for block in self.blocks:
            ct, pet = block.on_maps(ct, pet, self.window_size)
        return ct.permute(0, 3, 1, 2), pet.permute(0, 3, 1, 2)


class ConcatFusion(nn.Module):
    """CNN stand-in for CMIFM (ablation Network2/3): each stream convolves the concatenated pair.

    Same interface as :class:`CrossModalFusion`, so the generator is identical apart from this module.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv_ct = conv_block(2 * dim, dim)
        self.conv_pet = conv_block(2 * dim, dim)

    def forward(self, ct: torch.Tensor, pet: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        both = torch.cat([ct, pet], dim=1)
        return self.conv_ct(both), self.conv_pet(both)
