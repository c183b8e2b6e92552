"""Discrete-wavelet-transform fusion with PyWavelets, the classical multi-scale baseline.

Both images are decomposed with ``pywt.wavedec2`` over the last two axes (the whole batch at
once, on the CPU in float64); each detail coefficient is taken from the source of larger
magnitude (CT wins ties), the approximation is averaged, and ``pywt.waverec2`` rebuilds the image,
cropped back to the input size (odd sizes reconstruct one pixel larger). The level count is
capped at what ``pywt.dwt_max_level`` allows for the slice size, so small slices still fuse.
"""

from __future__ import annotations

import numpy as np
import pywt
import torch

from pipeline.fusion.registry import Fuser, register_fuser


@register_fuser("dwt")
class WaveletFuser(Fuser):
    """Max-magnitude detail and averaged approximation coefficients of a ``levels``-deep DWT."""

    def __init__(self, wavelet: str = "db2", levels: int = 3, mode: str = "symmetric") -> None:
        if levels < 1:
            raise ValueError(f"dwt fusion needs at least 1 decomposition level; got {levels}")
        self.wavelet = pywt.Wavelet(wavelet)
        self.levels = levels
        self.mode = mode

    def fuse(self, ct: torch.Tensor, pet: torch.Tensor) -> torch.Tensor:
        height, width = ct.shape[-2:]
        level = min(self.levels, pywt.dwt_max_level(min(height, width), self.wavelet.dec_len))
        ct_coeffs, pet_coeffs = (
            pywt.wavedec2(x.detach().cpu().double().numpy(), self.wavelet, mode=self.mode, level=level)
            for x in (ct, pet)
        )
        fused = [(ct_coeffs[0] + pet_coeffs[0]) / 2]
        for ct_details, pet_details in zip(ct_coeffs[1:], pet_coeffs[1:]):
            fused.append(tuple(np.where(np.abs(c) >= np.abs(p), c, p) for c, p in zip(ct_details, pet_details)))
        image = pywt.waverec2(fused, self.wavelet, mode=self.mode)
        return torch.from_numpy(image[..., :height, :width].copy())
