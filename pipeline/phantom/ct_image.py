"""CT image formation: tissue HU plus Gaussian noise, both through the scanner's in-plane blur.

As in a real reconstruction, one kernel sets both the edge sharpness and the noise grain: the
ideal HU image and white noise are added and blurred together, so the noise comes out slightly
correlated. Done slice by slice from the label volume, so the only full-size arrays are the
labels (uint8) and the stored pixels (int16) that the DICOM and NIfTI writers share.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

from pipeline.phantom.grid import Grid
from pipeline.phantom.rescale import StoredVolume
from pipeline.phantom.tissues import HU, lookup_table

#: Stored = HU - intercept: the usual CT encoding with 0 at -1024 HU.
RESCALE_INTERCEPT = -1024.0
#: Representable HU range of a 12-bit CT.
HU_RANGE = (-1024.0, 3071.0)
#: Pixel noise (standard deviation, HU, after the blur) at ``noise=1``: a routine-dose thorax CT.
NOISE_STD_HU = 15.0
#: In-plane resolution of the reconstruction (Gaussian sigma, mm).
RESOLUTION_SIGMA_MM = 0.8


def simulate_ct(labels: np.ndarray, grid: Grid, rng: np.random.Generator, noise: float) -> StoredVolume:
    """The CT of a label volume on ``grid``; ``noise`` scales the noise standard deviation (0: none)."""
    hu_of = lookup_table(HU)
    sigma = [RESOLUTION_SIGMA_MM / s for s in grid.spacing[:2]]
    white_std = noise * NOISE_STD_HU / _smoothing_gain(sigma)
    pixels = np.empty(labels.shape, dtype=np.int16, order="F")
    for k in range(labels.shape[2]):
        hu = hu_of[labels[:, :, k]]
        if noise > 0:
            hu += white_std * rng.standard_normal(hu.shape, dtype=np.float32)
        hu = gaussian_filter(hu, sigma, mode="nearest")
        np.clip(hu, *HU_RANGE, out=hu)
        hu -= RESCALE_INTERCEPT
        pixels[:, :, k] = np.rint(hu, out=hu)
    return StoredVolume(pixels, np.ones(labels.shape[2]), RESCALE_INTERCEPT)


def _smoothing_gain(sigma: list[float]) -> float:
    """Standard deviation left of unit white noise after the blur, to set the noise after it."""
    size = 2 * int(np.ceil(4 * max(sigma))) + 1
    impulse = np.zeros((size, size))
    impulse[size // 2, size // 2] = 1.0
    return float(np.sqrt((gaussian_filter(impulse, sigma) ** 2).sum()))
