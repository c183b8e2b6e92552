"""Content loss of one generator against its own source image: intensity + mu * (1 - SSIM).

G1 is held to the CT it starts from and G2 to the PET, so each pre-fused image keeps its own
modality while the adversarial term pulls in the other one. SSIM is MONAI's (Gaussian window 11,
sigma 1.5, K1 0.01, K2 0.03, data range 1 for inputs in [0, 1]): the Wang et al. 2004 defaults,
so values compare with the fusion-metric protocol.

SSIM is always computed in float32, also inside a bf16 autocast region: its variance terms
(E[x^2] - E[x]^2) cancel catastrophically at bf16's 8-bit mantissa, which turned the loss into
noise (and into infinities where a denominator rounded to zero) in mixed-precision training.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from monai.losses import SSIMLoss
from torch import nn

IntensityNorm = Literal["l1", "l2"]

_INTENSITY: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {"l1": F.l1_loss, "l2": F.mse_loss}


class ContentLoss(nn.Module):
    """L_int(output, source) + mu * (1 - SSIM(output, source)), averaged over the batch.

    Args:
        intensity: ``"l1"`` (default: robust to the few very bright PET voxels) or ``"l2"``.
        mu: weight of the structural term; 1 weights intensity and structure alike (to be tuned).
    """

    def __init__(self, intensity: IntensityNorm = "l1", mu: float = 1.0) -> None:
        super().__init__()
        if intensity not in _INTENSITY:
            raise ValueError(f"content loss: unknown intensity term {intensity!r}, expected 'l1' or 'l2'")
        self.intensity = _INTENSITY[intensity]
        self.structure = SSIMLoss(spatial_dims=2, data_range=1.0)
        self.mu = mu

    def forward(self, output: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        if not self.mu:
            return self.intensity(output, source)
        with torch.autocast(device_type=output.device.type, enabled=False):
            structure = self.structure(output.float(), source.float())
        return self.intensity(output, source) + self.mu * structure
