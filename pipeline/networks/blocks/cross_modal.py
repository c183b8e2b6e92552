"""Cross-modal fusion of the CT and PET feature streams: CMIFM and its CNN stand-in.

In each CMIFM block both streams are projected to Q, K, V with their own weights, then K and V
are swapped inside (shifted) windows:
Attention_CT = softmax(Q_CT K_PET^T / sqrt(d) + B_CT) V_PET, and symmetrically for PET,
so each stream reads the other modality while keeping its own content through the residual.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.blocks import MLPBlock
from monai.networks.nets.swin_unetr import WindowAttention, get_window_size, window_partition, window_reverse
from torch import nn

from pipeline.networks.blocks.conv import conv_block
from pipeline.networks.blocks.swin import pad_to_multiple, shifted_window_mask

Window = tuple[int, int]


def _to_windows(x: torch.Tensor, window: Window, shift: Window) -> torch.Tensor:
    """(B, H, W, C) -> (B * num_windows, N, C), after the cyclic shift toward the top-left."""
    if any(shift):
        x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
    return window_partition(x, window)


def _from_windows(windows: torch.Tensor, window: Window, shift: Window, dims: tuple[int, int, int]) -> torch.Tensor:
    """Inverse of :func:`_to_windows`; ``dims`` is (B, H, W)."""
    x = window_reverse(windows, window, dims)
    if any(shift):
        x = torch.roll(x, shifts=shift, dims=(1, 2))
    return x


class _CrossModalStream(nn.Module):
    """One modality's weights inside a fusion block: Q/K/V projections, bias table, norms, FFN.

    MONAI's ``WindowAttention`` holds the projections and the learned relative position bias; its
    own forward is self-attention only, so the swapped attention is computed in :meth:`attend`.
    The bias belongs to the query's stream (B_CT for CT queries).
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, mlp_ratio: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads, (window_size, window_size), qkv_bias=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio), act="GELU", dropout_mode="swin")

    def project(self, x: torch.Tensor, window: Window, shift: Window) -> torch.Tensor:
        """Pre-norm, window and project: (3, B * num_windows, heads, N, head_dim) for Q, K, V."""
        windows = _to_windows(self.norm1(x), window, shift)
        count, tokens, dim = windows.shape
        qkv = self.attn.qkv(windows).reshape(count, tokens, 3, self.num_heads, dim // self.num_heads)
        return qkv.permute(2, 0, 3, 1, 4)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """softmax(Q K^T / sqrt(d) + B [+ mask]) V, projected: (B * num_windows, N, C)."""
        count, heads, tokens, head_dim = q.shape
        index = self.attn.relative_position_index[:tokens, :tokens].reshape(-1)
        bias = self.attn.relative_position_bias_table[index].reshape(tokens, tokens, heads).permute(2, 0, 1)
        if mask is not None:  # windows of one image side by side, so the bias broadcasts over the batch
            bias = (bias.unsqueeze(0) + mask.unsqueeze(1)).flatten(0, 1)
        shape = (-1, bias.shape[0], tokens, head_dim)
        out = F.scaled_dot_product_attention(
            *(t.reshape(shape) for t in (q, k, v)), attn_mask=bias.unsqueeze(0).to(q.dtype)
        )
        return self.attn.proj(out.reshape(count, heads, tokens, head_dim).transpose(1, 2).reshape(count, tokens, -1))

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Z = FFN(LN(Z')) + Z'."""
        return x + self.mlp(self.norm2(x))


class CrossModalBlock(nn.Module):
    """One CMIFM fusion block on channels-last (B, H, W, C) maps whose sides are window multiples."""

    def __init__(self, dim: int, num_heads: int, window_size: int, shifted: bool, mlp_ratio: float) -> None:
        super().__init__()
        self.window_size = window_size
        self.shift_size = window_size // 2 if shifted else 0
        self.ct = _CrossModalStream(dim, num_heads, window_size, mlp_ratio)
        self.pet = _CrossModalStream(dim, num_heads, window_size, mlp_ratio)

    def forward(
        self, ct: torch.Tensor, pet: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b, h, w, _ = ct.shape
        window, shift = get_window_size((h, w), (self.window_size,) * 2, (self.shift_size,) * 2)
        window_mask = mask if any(shift) else None
        q_ct, k_ct, v_ct = self.ct.project(ct, window, shift)
        q_pet, k_pet, v_pet = self.pet.project(pet, window, shift)
        ct = ct + _from_windows(self.ct.attend(q_ct, k_pet, v_pet, window_mask), window, shift, (b, h, w))
        pet = pet + _from_windows(self.pet.attend(q_pet, k_ct, v_ct, window_mask), window, shift, (b, h, w))
        return self.ct.feed_forward(ct), self.pet.feed_forward(pet)


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
        ct, pet = (pad_to_multiple(t, self.window_size).permute(0, 2, 3, 1) for t in (ct, pet))
        mask = shifted_window_mask(ct.shape[1], ct.shape[2], self.window_size, ct.device)
        for block in self.blocks:
            ct, pet = block(ct, pet, mask)
        ct, pet = (t.permute(0, 3, 1, 2)[..., :h, :w].contiguous() for t in (ct, pet))
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
