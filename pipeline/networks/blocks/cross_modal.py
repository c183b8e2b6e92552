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
from pipeline.networks.blocks.swin import SwinBlock, alternate_windows, over_chunks, pad_to_multiple
from pipeline.networks.blocks.windows import Chunk, WindowOrder, windows_for


class CrossModalBlock(nn.Module):
    """One CMIFM fusion block on the CT and PET tokens, both in this block's window order.

    Each stream is a :class:`SwinBlock` (its own norms, Q/K/V projections, bias B and FFN) whose
    attention reads the other stream's keys and values; the bias belongs to the query's stream.
    Without autograd the results overwrite both token streams passed in (see :func:`over_chunks`).
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, shifted: bool, mlp_ratio: float) -> None:
        super().__init__()
        self.shifted = shifted
        self.shift_size = window_size // 2 if shifted else 0
        self.ct = SwinBlock(dim, num_heads, window_size, shifted, mlp_ratio)
        self.pet = SwinBlock(dim, num_heads, window_size, shifted, mlp_ratio)

    def forward(self, ct: torch.Tensor, pet: torch.Tensor, order: WindowOrder) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = order.window_tokens
        bias_ct, bias_pet = self.ct.attn.position_bias(tokens), self.pet.attn.position_bias(tokens)

        def run(chunk: Chunk, x_ct: torch.Tensor, x_pet: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            q_ct, k_ct, v_ct = self.ct.project(x_ct, tokens)
            q_pet, k_pet, v_pet = self.pet.project(x_pet, tokens)
            attended_ct = self.ct.attn.attend(q_ct, k_pet, v_pet, bias_ct, chunk.mask)
            attended_pet = self.pet.attn.attend(q_pet, k_ct, v_ct, bias_pet, chunk.mask)
            return self.ct.residuals(x_ct, attended_ct), self.pet.residuals(x_pet, attended_pet)

        return over_chunks(order, run, ct, pet)


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
        windows = windows_for(ct, self.window_size)
        shape, first, last = ct.shape, self.blocks[0].shifted, self.blocks[-1].shifted
        ct, pet = alternate_windows(
            self.blocks, windows, lambda block, order, a, b: block(a, b, order),
            windows.enter(ct, first), windows.enter(pet, first),
        )
        ct, pet = (windows.leave(z, last, shape)[..., :h, :w] for z in (ct, pet))
        return self.conv_ct(ct), self.conv_pet(pet)


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
