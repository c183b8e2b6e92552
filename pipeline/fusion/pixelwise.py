"""Pixel-wise baselines: the simplest fusions, the floor any learned method must beat."""

from __future__ import annotations

import torch

from pipeline.fusion.registry import Fuser, register_fuser


@register_fuser("average")
class AverageFuser(Fuser):
    """Pixel mean of CT and PET: keeps both, halves the contrast of each."""

    def fuse(self, ct: torch.Tensor, pet: torch.Tensor) -> torch.Tensor:
        return (ct + pet) / 2


@register_fuser("max")
class MaxFuser(Fuser):
    """Pixel maximum: keeps bright PET uptake and bright CT bone at full intensity."""

    def fuse(self, ct: torch.Tensor, pet: torch.Tensor) -> torch.Tensor:
        return torch.maximum(ct, pet)
