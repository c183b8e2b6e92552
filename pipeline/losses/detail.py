"""Detail loss on the final fused image: keep the brighter source's intensity and the stronger edge.

DCIF-GAN's content terms hold each pre-fused image to its own source, so their mean drifts towards
an average of CT and PET, the baseline that scores lowest on edge and contrast metrics. This term,
the joint loss of SwinFusion (Ma et al. 2022), acts on ``F = (F_CT + F_PET) / 2`` itself:

    L_detail = L1(F, max(CT, PET)) + L1(|grad F|, max(|grad CT|, |grad PET|))

with Sobel gradients. It is a product option (``detail_weight`` in the bundle, 0 = the paper's
objective), chosen by validation on real studies.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SobelMagnitude(nn.Module):
    """|d/dx| + |d/dy| of a ``(B, 1, H, W)`` image with 3x3 Sobel kernels, replicate-padded."""

    def __init__(self) -> None:
        super().__init__()
        kernel_x = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
        self.register_buffer("kernels", torch.stack([kernel_x, kernel_x.T])[:, None], persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        padded = F.pad(image, (1, 1, 1, 1), mode="replicate")
        return F.conv2d(padded, self.kernels.to(device=image.device, dtype=image.dtype)).abs().sum(dim=1, keepdim=True)


class DetailLoss(nn.Module):
    """``L1(F, max(A, B)) + L1(|grad F|, max(|grad A|, |grad B|))`` for images in [0, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.gradient = SobelMagnitude()

    def forward(self, fused: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        intensity = F.l1_loss(fused, torch.maximum(a, b))
        edges = F.l1_loss(self.gradient(fused), torch.maximum(self.gradient(a), self.gradient(b)))
        return intensity + edges
