"""The eight fusion metrics, computed under the single protocol of ``docs/fusion_metrics.md``.

Published fusion papers disagree on bins, log base, SSIM window, PSNR peak and border handling,
so their numbers rarely compare. Every number this product reports comes from this module, under
these conventions:

- F is the fused image, A the CT, B the PET. Each metric function below takes float arrays on
  the **0-255 scale** and computes in float64; :func:`fusion_metrics` takes [0, 1] slices and
  multiplies by 255 itself. The fused image is scored as produced (no min-max stretch). A NaN or
  infinite value in any input is an error, never a score.
- Histograms use **256 levels**: values rounded to the nearest integer level (``numpy.rint``)
  and clipped to 0..255. Entropies and mutual information are in **bits (log2)**.
- **MI** = MI(F, A) + MI(F, B), each from the 256 x 256 joint histogram.
- **SSIM** = SSIM(F, A) + SSIM(F, B) (0..2); each is the mean local SSIM of Wang et al. 2004 over
  the windows lying fully inside the image, with an 11 x 11 Gaussian window (sigma 1.5, sum 1),
  L = 255, K1 = 0.01, K2 = 0.03 and variances as weighted E[x^2] - mu^2. Slices must be at
  least 11 x 11.
- **PSNR** = 10 log10(255^2 / MSE) with MSE = (MSE(F, A) + MSE(F, B)) / 2; ``inf`` when
  MSE = 0 (F equals both sources), because the ratio has no finite value there.
- **Q^AB/F** (Xydeas-Petrovic): Sobel responses by 2-D convolution with zero padding, strength
  g = sqrt(Sx^2 + Sy^2), orientation atan(Sy / Sx) (pi/2 where Sx = 0; edge polarity ignored),
  strength ratio min/max (1 where equal), Gamma_g = 0.9994, k_g = -15, sigma_g = 0.5,
  Gamma_a = 0.9879, k_a = -22, sigma_a = 0.8. F = A = B scores 0.9748. ``nan`` when neither
  source has any edge (sum of gA + gB is 0), where edge preservation is undefined. Sx is the
  response along an array's second axis (the kernel [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]); the
  protocol leaves the axis open, and orientation by atan is not symmetric in it: scored transposed,
  a slice's Q^AB/F moves by up to about 0.01. :func:`score_slices` passes the pipeline's (X, Y)
  slices, so Sx is along the patient's y; every Q^AB/F this product reports uses that convention.
- **SD** is the population standard deviation; **AG** uses ``numpy.gradient`` differences.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from scipy import ndimage

METRIC_NAMES: tuple[str, ...] = ("AG", "SF", "SSIM", "SD", "MI", "PSNR", "IE", "QABF")

PEAK = 255.0
_LEVELS = 256
_SSIM_WINDOW = 11
_SSIM_SIGMA = 1.5
_SSIM_C1 = (0.01 * PEAK) ** 2
_SSIM_C2 = (0.03 * PEAK) ** 2
_SOBEL_X = np.array([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
_SOBEL_Y = _SOBEL_X.T


def _levels(x: np.ndarray) -> np.ndarray:
    """Integer grey levels 0..255, as histograms need."""
    return np.clip(np.rint(x), 0, _LEVELS - 1).astype(np.int64)


def _entropy_bits(counts: np.ndarray) -> float:
    """Shannon entropy in bits of a histogram given as counts."""
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def information_entropy(f: np.ndarray) -> float:
    """IE: entropy in bits of the 256-level histogram of ``f`` (0..8)."""
    return _entropy_bits(np.bincount(_levels(f).ravel(), minlength=_LEVELS))


def standard_deviation(f: np.ndarray) -> float:
    """SD: population standard deviation (divide by M N)."""
    return float(np.std(np.asarray(f, dtype=np.float64)))


def spatial_frequency(f: np.ndarray) -> float:
    """SF = sqrt(RF^2 + CF^2), each the mean squared first difference along rows / columns."""
    f = np.asarray(f, dtype=np.float64)
    row_frequency = np.mean(np.diff(f, axis=1) ** 2)
    column_frequency = np.mean(np.diff(f, axis=0) ** 2)
    return float(np.sqrt(row_frequency + column_frequency))


def average_gradient(f: np.ndarray) -> float:
    """AG: mean of sqrt((Gx^2 + Gy^2) / 2), central differences inside, one-sided at borders."""
    gy, gx = np.gradient(np.asarray(f, dtype=np.float64))
    return float(np.mean(np.sqrt((gx**2 + gy**2) / 2)))


def mutual_information(x: np.ndarray, y: np.ndarray) -> float:
    """MI(x, y) in bits, H(x) + H(y) - H(x, y) from the 256 x 256 joint histogram."""
    joint = np.bincount((_levels(x) * _LEVELS + _levels(y)).ravel(), minlength=_LEVELS**2)
    joint = joint.reshape(_LEVELS, _LEVELS)
    return _entropy_bits(joint.sum(axis=1)) + _entropy_bits(joint.sum(axis=0)) - _entropy_bits(joint)


def _gaussian_window_means(maps: np.ndarray) -> np.ndarray:
    """Gaussian-weighted local means of a stack (N, H, W) over windows lying fully inside (valid mode)."""
    offsets = np.arange(_SSIM_WINDOW) - _SSIM_WINDOW // 2
    weights = np.exp(-(offsets**2) / (2 * _SSIM_SIGMA**2))
    weights /= weights.sum()
    border = _SSIM_WINDOW // 2
    rows_smoothed = ndimage.correlate1d(maps, weights, axis=2)[:, :, border:-border]
    return ndimage.correlate1d(rows_smoothed, weights, axis=1)[:, border:-border]


def _ssim_to_each(x: np.ndarray, *others: np.ndarray) -> list[float]:
    """Mean SSIM of Wang et al. 2004 between ``x`` and each of ``others`` (1 for identical images).

    The local moments of ``x`` are filtered once for every pair: SSIM(F, A) + SSIM(F, B) filters 8 maps, not 10.
    """
    x = np.asarray(x, dtype=np.float64)
    if min(x.shape) < _SSIM_WINDOW:
        raise ValueError(f"SSIM needs slices of at least {_SSIM_WINDOW}x{_SSIM_WINDOW} pixels; got {x.shape}")
    others = [np.asarray(y, dtype=np.float64) for y in others]
    means = _gaussian_window_means(np.stack([x, x * x, *(m for y in others for m in (y, y * y, x * y))]))
    mu_x, mean_xx = means[:2]
    var_x = mean_xx - mu_x**2
    scores = []
    for mu_y, mean_yy, mean_xy in means[2:].reshape(len(others), 3, *means.shape[1:]):
        var_y, cov = mean_yy - mu_y**2, mean_xy - mu_x * mu_y
        luminance = (2 * mu_x * mu_y + _SSIM_C1) / (mu_x**2 + mu_y**2 + _SSIM_C1)
        contrast_structure = (2 * cov + _SSIM_C2) / (var_x + var_y + _SSIM_C2)
        scores.append(float(np.mean(luminance * contrast_structure)))
    return scores


def ssim(x: np.ndarray, y: np.ndarray) -> float:
    """Mean SSIM of Wang et al. 2004 between ``x`` and ``y`` (one pair; 1 for identical images)."""
    return _ssim_to_each(x, y)[0]


def psnr(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """PSNR of ``f`` against both sources with the mean of the two MSEs; ``inf`` when that is 0."""
    f = np.asarray(f, dtype=np.float64)
    mse = (np.mean((f - a) ** 2) + np.mean((f - b) ** 2)) / 2
    return math.inf if mse == 0 else float(10 * np.log10(PEAK**2 / mse))


def _sobel_strength_orientation(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edge strength and atan orientation (pi/2 where Sx = 0) from zero-padded Sobel responses."""
    x = np.asarray(x, dtype=np.float64)
    sx = ndimage.convolve(x, _SOBEL_X, mode="constant", cval=0.0)
    sy = ndimage.convolve(x, _SOBEL_Y, mode="constant", cval=0.0)
    vertical = sx == 0
    orientation = np.where(vertical, np.pi / 2, np.arctan(sy / np.where(vertical, 1.0, sx)))
    return np.hypot(sx, sy), orientation


def _edge_preservation(source: tuple[np.ndarray, np.ndarray], fused: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Per-pixel Q^XF: sigmoids of the strength ratio and the orientation agreement."""
    (g_x, alpha_x), (g_f, alpha_f) = source, fused
    stronger = np.maximum(g_x, g_f)
    strength_ratio = np.divide(np.minimum(g_x, g_f), stronger, out=np.ones_like(g_x), where=stronger > 0)
    orientation_agreement = 1 - np.abs(alpha_x - alpha_f) / (np.pi / 2)
    return (0.9994 / (1 + np.exp(-15 * (strength_ratio - 0.5)))) * (
        0.9879 / (1 + np.exp(-22 * (orientation_agreement - 0.8)))
    )


def qabf(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Q^AB/F: edge preservation of both sources in ``f``, weighted by source edge strength."""
    edges_f = _sobel_strength_orientation(f)
    edges_a = _sobel_strength_orientation(a)
    edges_b = _sobel_strength_orientation(b)
    weight = edges_a[0].sum() + edges_b[0].sum()
    if weight == 0:
        return math.nan
    preserved = _edge_preservation(edges_a, edges_f) * edges_a[0] + _edge_preservation(edges_b, edges_f) * edges_b[0]
    return float(preserved.sum() / weight)


def _of_fused(metric: Callable[[np.ndarray], float]) -> Callable[[np.ndarray, np.ndarray, np.ndarray], float]:
    """Adapt a no-reference metric to the common (F, A, B) signature."""
    return lambda f, a, b: metric(f)


def _summed_over_sources(
    metric: Callable[[np.ndarray, np.ndarray], float],
) -> Callable[[np.ndarray, np.ndarray, np.ndarray], float]:
    """metric(F, A) + metric(F, B), the protocol's form of MI and SSIM."""
    return lambda f, a, b: metric(f, a) + metric(f, b)


_SCORERS: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], float]] = {
    "AG": _of_fused(average_gradient),
    "SF": _of_fused(spatial_frequency),
    "SSIM": lambda f, a, b: sum(_ssim_to_each(f, a, b)),
    "SD": _of_fused(standard_deviation),
    "MI": _summed_over_sources(mutual_information),
    "PSNR": psnr,
    "IE": _of_fused(information_entropy),
    "QABF": qabf,
}


def _as_slice_255(name: str, x: np.ndarray | torch.Tensor) -> np.ndarray:
    """A [0, 1] slice (numpy or torch, singleton dims allowed) as a float64 2-D array on 0-255."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.squeeze(np.asarray(x, dtype=np.float64))
    if x.ndim != 2:
        raise ValueError(f"fusion metrics need 2-D slices; {name} has shape {x.shape} after squeezing")
    # A NaN would be scored as grey level 0 by the histograms and dropped by the means: refused, so a network that
    # has diverged is told, not averaged.
    bad = int(x.size - np.count_nonzero(np.isfinite(x)))
    if bad:
        raise ValueError(f"fusion metrics need finite images; {name} holds {bad} NaN or infinite value(s)")
    return x * PEAK


def fusion_metrics(
    fused: np.ndarray | torch.Tensor,
    ct: np.ndarray | torch.Tensor,
    pet: np.ndarray | torch.Tensor,
    names: Sequence[str] = METRIC_NAMES,
) -> dict[str, float]:
    """Score one fused slice against its CT and PET sources; all inputs are 2-D and in [0, 1].

    Singleton dimensions are squeezed. Returns ``{name: value}`` for ``names`` (default: all
    eight, ``AG, SF, SSIM, SD, MI, PSNR, IE, QABF``), under the conventions of this module's
    docstring. Raises ``ValueError`` for non-2-D or unequal shapes, a NaN or infinite value, or an
    unknown metric name.
    """
    unknown = [name for name in names if name not in _SCORERS]
    if unknown:
        raise ValueError(f"unknown fusion metric(s) {unknown}; available: {', '.join(METRIC_NAMES)}")
    f, a, b = (_as_slice_255(name, x) for name, x in (("fused", fused), ("ct", ct), ("pet", pet)))
    if not f.shape == a.shape == b.shape:
        raise ValueError(f"fusion metrics need equal shapes; got fused {f.shape}, ct {a.shape}, pet {b.shape}")
    return {name: _SCORERS[name](f, a, b) for name in names}


def score_slices(
    fused: np.ndarray | torch.Tensor,
    image: np.ndarray | torch.Tensor,
    ct_channels: Sequence[int],
    slices: Iterable[int],
    names: Sequence[str] = METRIC_NAMES,
) -> Iterable[tuple[int, int, dict[str, float]]]:
    """Score fused volumes against their sources, axial slice by axial slice: ``(channel, z, metrics)``.

    ``fused`` is ``(C, X, Y, Z)``; ``image`` is ``(W + 1, X, Y, Z)``, CT windows then the PET, and
    fused channel ``c`` is scored against the CT window ``image[ct_channels[c]]`` and the PET. The
    one loop behind every score this product reports (the evaluator's per-slice table, the
    validation key metric, the batch report), so they differ only in which ``slices`` they pass.
    Scores come window by window, then slice by slice, then channel.
    """
    slices = list(slices)
    pet = image[-1]
    for window in dict.fromkeys(ct_channels):
        channels = [c for c, w in enumerate(ct_channels) if w == window]
        for z in slices:
            for c in channels:
                try:
                    scores = fusion_metrics(fused[c, ..., z], image[window, ..., z], pet[..., z], names)
                except ValueError as error:
                    raise ValueError(f"axial slice {z}, fused channel {c}: {error}") from None
                yield c, z, scores


def summarise(rows: Iterable[Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """Mean, population standard deviation and count per metric over per-slice rows.

    Non-finite values (``inf`` PSNR where a slice equals both sources, ``nan`` Q^AB/F where no
    source has an edge) are left out, so one degenerate slice does not swamp a study's mean;
    ``n`` says how many values each statistic used. The population std (ddof 0) is used so
    a single slice gives 0 rather than ``nan``. A metric with no finite value gets ``nan``.
    """
    rows = list(rows)
    keys = dict.fromkeys(key for row in rows for key in row)
    summary = {}
    for key in keys:
        values = np.array([row[key] for row in rows if key in row], dtype=np.float64)
        finite = values[np.isfinite(values)]
        mean, std = (float(finite.mean()), float(finite.std())) if finite.size else (math.nan, math.nan)
        summary[key] = {"mean": mean, "std": std, "n": int(finite.size)}
    return summary
