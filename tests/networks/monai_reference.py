"""The DCIF-GAN attention stages as MONAI's own blocks compute them: the oracle for the fast layout.

Built from MONAI's ``SwinTransformerBlock``/``WindowAttention`` (roll, window partition, full-map
tensors), with the same parameter names as the product's modules, so one state dict loads into
both. Tests only: the product has one network definition.
"""

from __future__ import annotations

import copy

import torch
from monai.networks.blocks import MLPBlock
from monai.networks.nets.swin_unetr import (
    SwinTransformerBlock,
    WindowAttention,
    compute_mask,
    get_window_size,
    window_partition,
    window_reverse,
)
from torch import nn

from pipeline.networks.blocks import CrossModalFusion, SwinStage


def _mask(h: int, w: int, window_size: int, device: torch.device) -> torch.Tensor:
    window, shift = get_window_size((h, w), (window_size,) * 2, (window_size // 2,) * 2)
    return compute_mask([h, w], window, shift, device)


class ReferenceSwinStage(nn.Module):
    def __init__(self, dim: int, depth: int, num_heads: int, window_size: int, mlp_ratio: float) -> None:
        super().__init__()
        self.window_size = window_size
        self.blocks = nn.ModuleList(
            SwinTransformerBlock(dim, num_heads, (window_size,) * 2, (window_size // 2,) * 2 if i % 2 else (0, 0),
                                 mlp_ratio, qkv_bias=True, use_flash_attention=True)
            for i in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = _mask(*x.shape[-2:], self.window_size, x.device)
        z = x.permute(0, 2, 3, 1)
        for block in self.blocks:
            z = block(z, mask)
        return z.permute(0, 3, 1, 2).contiguous()


class _Stream(nn.Module):
    def __init__(self, dim: int, num_heads: int, window_size: int, mlp_ratio: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads, (window_size, window_size), qkv_bias=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio), act="GELU", dropout_mode="swin")

    def project(self, x, window, shift):
        if any(shift):
            x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
        windows = window_partition(self.norm1(x), window)
        count, tokens, dim = windows.shape
        qkv = self.attn.qkv(windows).reshape(count, tokens, 3, self.num_heads, dim // self.num_heads)
        return qkv.permute(2, 0, 3, 1, 4)

    def attend(self, q, k, v, mask):
        count, heads, tokens, head_dim = q.shape
        index = self.attn.relative_position_index[:tokens, :tokens].reshape(-1)
        bias = self.attn.relative_position_bias_table[index].reshape(tokens, tokens, heads).permute(2, 0, 1)
        weights = q * self.attn.scale @ k.transpose(-2, -1) + bias
        if mask is not None:
            weights = (weights.view(-1, mask.shape[0], heads, tokens, tokens) + mask[None, :, None]).flatten(0, 1)
        out = weights.softmax(-1) @ v
        return self.attn.proj(out.transpose(1, 2).reshape(count, tokens, -1))


class _CrossBlock(nn.Module):
    def __init__(self, dim, num_heads, window_size, shifted, mlp_ratio):
        super().__init__()
        self.window_size, self.shift_size = window_size, window_size // 2 if shifted else 0
        self.ct = _Stream(dim, num_heads, window_size, mlp_ratio)
        self.pet = _Stream(dim, num_heads, window_size, mlp_ratio)

    def forward(self, ct, pet, mask):
        b, h, w, _ = ct.shape
        window, shift = get_window_size((h, w), (self.window_size,) * 2, (self.shift_size,) * 2)
        mask = mask if any(shift) else None

        def back(windows):
            x = window_reverse(windows, window, (b, h, w))
            return torch.roll(x, shifts=shift, dims=(1, 2)) if any(shift) else x

        q_ct, k_ct, v_ct = self.ct.project(ct, window, shift)
        q_pet, k_pet, v_pet = self.pet.project(pet, window, shift)
        ct = ct + back(self.ct.attend(q_ct, k_pet, v_pet, mask))
        pet = pet + back(self.pet.attend(q_pet, k_ct, v_ct, mask))
        return (x + s.mlp(s.norm2(x)) for x, s in ((ct, self.ct), (pet, self.pet)))


class ReferenceCrossModalFusion(nn.Module):
    def __init__(self, dim, depth, num_heads, window_size, mlp_ratio):
        super().__init__()
        self.window_size = window_size
        self.blocks = nn.ModuleList(_CrossBlock(dim, num_heads, window_size, bool(i % 2), mlp_ratio)
                                    for i in range(depth))
        self.conv_ct = nn.Conv2d(dim, dim, 3, padding=1)
        self.conv_pet = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, ct, pet):
        mask = _mask(*ct.shape[-2:], self.window_size, ct.device)
        ct, pet = ct.permute(0, 2, 3, 1), pet.permute(0, 2, 3, 1)
        for block in self.blocks:
            ct, pet = block(ct, pet, mask)
        return self.conv_ct(ct.permute(0, 3, 1, 2)), self.conv_pet(pet.permute(0, 3, 1, 2))


def reference_generator(generator: nn.Module) -> nn.Module:
    """A deep copy of ``generator`` whose attention stages are the MONAI-layout references."""
    reference = copy.deepcopy(generator)
    for name, module in list(reference.named_modules()):
        if isinstance(module, SwinStage):
            block = module.blocks[0]
            replacement = ReferenceSwinStage(block.norm1.normalized_shape[0], len(module.blocks), block.attn.num_heads,
                                             module.window_size, block.mlp.linear1.out_features / block.norm1.normalized_shape[0])
        elif isinstance(module, CrossModalFusion):
            stream = module.blocks[0].ct
            dim = stream.norm1.normalized_shape[0]
            replacement = ReferenceCrossModalFusion(dim, len(module.blocks), stream.attn.num_heads,
                                                    module.window_size, stream.mlp.linear1.out_features / dim)
        else:
            continue
        replacement.load_state_dict(module.state_dict())
        parent_name, _, child = name.rpartition(".")
        setattr(reference.get_submodule(parent_name) if parent_name else reference, child, replacement)
    return reference
