"""Swin Transformer stage for 2-D feature maps, built on MONAI's Swin blocks.

MONAI's ``SwinTransformerBlock`` already implements the DCIF-GAN STB in 2-D: pre-norm residual
window attention with a learned relative position bias, the cyclic shift toward the top-left
with its attention mask, and a GELU feed-forward. MONAI's own stage (``BasicLayer``) needs
``einops``, so this module stacks the blocks itself and owns the (B, C, H, W) boundary layout.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.nets.swin_unetr import SwinTransformerBlock, compute_mask, get_window_size
from torch import nn


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


def shifted_window_mask(height: int, width: int, window_size: int, device: torch.device) -> torch.Tensor:
    """SW-MSA mask (num_windows, N, N) for a (height, width) map, as MONAI's blocks expect it.

    It holds -100 between tokens that the cyclic shift brought together from opposite borders, so
    they do not attend to each other. Window and shift follow MONAI's ``get_window_size`` (the
    window shrinks to a side no longer than it, and the shift along that side drops to 0).
    """
    window, shift = get_window_size((height, width), (window_size,) * 2, (window_size // 2,) * 2)
    padded = [-(-size // win) * win for size, win in zip((height, width), window)]
    return compute_mask(padded, window, shift, device)


class SwinStage(nn.Module):
    """``depth`` Swin Transformer blocks alternating W-MSA and SW-MSA, on (B, C, H, W) maps.

    Z' = MSA(LN(Z)) + Z; Z = FFN(LN(Z')) + Z'. Any H, W works (MONAI's block zero-pads inside), but
    the generator pads to a multiple of the window first so that no zero border is attended to.
    At inference (autograd off) attention runs through ``scaled_dot_product_attention``.
    """

    def __init__(
        self, dim: int, depth: int, num_heads: int = 6, window_size: int = 8, mlp_ratio: float = 2.0
    ) -> None:
        super().__init__()
        self.window_size = window_size
        self.blocks = nn.ModuleList(
            SwinTransformerBlock(
                dim=dim,
                num_heads=num_heads,
                window_size=(window_size, window_size),
                shift_size=(window_size // 2,) * 2 if index % 2 else (0, 0),
                mlp_ratio=mlp_ratio,
                qkv_bias=True,
                use_flash_attention=True,
            )
            for index in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = shifted_window_mask(*x.shape[-2:], self.window_size, x.device)
        z = x.permute(0, 2, 3, 1)
        for block in self.blocks:
            z = block(z, mask)
        return z.permute(0, 3, 1, 2).contiguous()
