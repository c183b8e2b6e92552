"""Content loss of one generator against its own source image: intensity + mu * (1 - SSIM).

G1 is held to the CT it starts from and G2 to the PET, so each pre-fused image keeps its own
modality while the adversarial term pulls in the other one. SSIM is MONAI's (Gaussian window 11,
sigma 1.5, K1 0.01, K2 0.03, data range 1 for inputs in [0, 1]): the Wang et al. 2004 defaults,
so values compare with the fusion-metric protocol. Its Gaussian window is applied as two 1-D passes,
each a product with a banded matrix (:class:`SeparableSSIMMetric`, :func:`window_sum`): the same
numbers at a small fraction of the cost of MONAI's five 121-tap single-channel convolutions, which
with their backward were the slowest kernels of a CPU training step (oneDNN runs one-channel
convolutions at a small fraction of its rate).

SSIM is always computed in float32, also inside a bf16 autocast region: its variance terms
(E[x^2] - E[x]^2) cancel catastrophically at bf16's 8-bit mantissa, which turned the loss into
noise (and into infinities where a denominator rounded to zero) in mixed-precision training.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Literal

import torch
import torch.nn.functional as F
from monai.losses import SSIMLoss
from monai.metrics import SSIMMetric
from monai.metrics.regression import KernelType
from torch import nn

IntensityNorm = Literal["l1", "l2"]

_INTENSITY: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {"l1": F.l1_loss, "l2": F.mse_loss}


def _gaussian_taps(size: int, sigma: float) -> torch.Tensor:
    """The normalised 1-D Gaussian whose outer product is MONAI's 2-D SSIM window."""
    offsets = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    taps = torch.exp(-((offsets / sigma) ** 2) / 2)
    return taps / taps.sum()


@lru_cache(maxsize=32)
def _band(taps: tuple[float, ...], size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The (size, size - len(taps) + 1) matrix B with B[i + t, i] = taps[t]: ``x @ B`` correlates the rows of x with
    ``taps`` where the window fits ("valid")."""
    with torch.inference_mode(False):  # a normal tensor even when first asked for in inference: training reuses it
        band = torch.zeros(size, size - len(taps) + 1, device=device, dtype=dtype)
        for shift, weight in enumerate(taps):
            band.diagonal(-shift).fill_(weight)
    return band


def window_sum(images: torch.Tensor, column_taps: tuple[float, ...], row_taps: tuple[float, ...]) -> torch.Tensor:
    """Valid 2-D correlation of ``images`` (..., H, W) with the separable window ``column_taps`` x ``row_taps``.

    Each pass is one batched product with a banded matrix (:func:`_band`), forward and backward: 1.7-2.4x faster
    than a multiply-add per tap over shifted views (the five SSIM moments of eight 64 x 64 and 128 x 128 crops,
    2 CPU threads), which in turn ran 6x faster than autograd through the views.
    """
    height, width = images.shape[-2:]
    columns = _band(column_taps, height, images.device, images.dtype)
    return columns.t() @ images @ _band(row_taps, width, images.device, images.dtype)


class SeparableSSIMMetric(SSIMMetric):
    """MONAI's 2-D Gaussian SSIM, mean per image, with the window as a column pass then a row pass.

    The five local moments (x, y, x^2, y^2, xy) go through the two passes as one batch.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(spatial_dims=2, **kwargs)
        if self.kernel_type != KernelType.GAUSSIAN:
            raise ValueError("SeparableSSIMMetric is for the Gaussian window")
        self.column_taps, self.row_taps = (tuple(_gaussian_taps(size, sigma).tolist())
                                           for size, sigma in zip(self.kernel_size, self.kernel_sigma))

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor, **kwargs) -> torch.Tensor:
        if y_pred.shape != y.shape or y_pred.ndim != 4:
            raise ValueError(f"SSIM needs two (B, C, H, W) images of one shape, got {y_pred.shape} and {y.shape}")
        x, y = y_pred.float(), y.float()
        batch, channels = x.shape[:2]
        moments = torch.stack([x, y, x * x, y * y, x * y])
        moments = window_sum(moments, self.column_taps, self.row_taps)
        mu_x, mu_y, mu_xx, mu_yy, mu_xy = moments
        c1, c2 = (self.k1 * self.data_range) ** 2, (self.k2 * self.data_range) ** 2
        sigma_x, sigma_y, sigma_xy = mu_xx - mu_x * mu_x, mu_yy - mu_y * mu_y, mu_xy - mu_x * mu_y
        contrast = (2 * sigma_xy + c2) / (sigma_x + sigma_y + c2)
        ssim = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1) * contrast
        return ssim.view(batch, -1).mean(1, keepdim=True)


class SeparableSSIMLoss(SSIMLoss):
    """MONAI's ``SSIMLoss`` in 2-D (1 - SSIM, its reductions) on :class:`SeparableSSIMMetric`."""

    def __init__(self, data_range: float = 1.0, **kwargs) -> None:
        super().__init__(spatial_dims=2, data_range=data_range, **kwargs)
        self.ssim_metric = SeparableSSIMMetric(data_range=data_range, kernel_type=self.kernel_type,
                                               win_size=self.kernel_size, kernel_sigma=self.kernel_sigma,
                                               k1=self.k1, k2=self.k2)


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
        self.structure = SeparableSSIMLoss(data_range=1.0)
        self.mu = mu

    def forward(self, output: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        if not self.mu:
            return self.intensity(output, source)
        with torch.autocast(device_type=output.device.type, enabled=False):
            structure = self.structure(output.float(), source.float())
        return self.intensity(output, source) + self.mu * structure
