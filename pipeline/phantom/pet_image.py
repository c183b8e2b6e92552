"""PET image formation in SUV: partial volume, scanner point spread, and Poisson-like noise.

The designed uptake is sampled on a grid a few times finer than the PET voxels (about 2 mm), so
voxels at tissue edges mix their tissues as a real scanner does; the point spread (a Gaussian of
~6 mm FWHM) is applied there, and each PET voxel is the mean of its sub-voxels. Noise is drawn on
the fine grid with variance proportional to the local uptake (counting statistics), then goes
through the same point spread, which gives it the blotchy texture of reconstructed PET. Both steps
are linear, so the image is exactly ``noise-free image + filtered noise``: the noise-free image is
what the truth file quotes (e.g. the tumour's expected SUVmax), the noisy one what is written.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from pipeline.phantom.anatomy import Anatomy
from pipeline.phantom.grid import Grid
from pipeline.phantom.thorax import Tumour
from pipeline.phantom.tissues import Tissue, lookup_table

#: Scanner resolution (full width at half maximum, mm), typical of a clinical PET/CT.
PSF_FWHM_MM = 6.0
#: Target spacing (mm) of the grid the uptake is sampled on before averaging into PET voxels.
FINE_SPACING_MM = 2.0
#: Detected counts per ml per unit SUV at ``noise=1``: about 4% voxel noise in soft tissue at 4 mm voxels
#: and 1.5% in the tumour, so the noisy tumour SUVmax stays within a few percent of the noise-free one.
COUNT_DENSITY_PER_ML = 600.0
#: Slices of the fine grid processed at a time when drawing noise: bounds the temporaries.
NOISE_SLAB = 16

FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))


@dataclass(frozen=True)
class PetImage:
    """The simulated PET in SUV on its grid, and what its noise-free version shows at the tumour."""

    suv: np.ndarray
    expected_tumour_suvmax: float
    expected_tumour_suvmax_lps: tuple[float, float, float]


def simulate_pet(
    anatomy: Anatomy,
    grid: Grid,
    suv_by_tissue: dict[Tissue, float],
    tumour: Tumour,
    rng: np.random.Generator,
    noise: float,
) -> PetImage:
    """The PET (SUV, float32, (x, y, z)) of ``anatomy`` on ``grid``; ``noise`` scales the noise std (0: none)."""
    # Only voxels within reach of the body's blurred activity are simulated; the rest stay 0.
    # The tumour lies inside the field of view, so this window is never empty.
    reach = 3 * PSF_FWHM_MM + max(grid.spacing)
    low, high = anatomy.bounds()
    window = grid.window(low - reach, high + reach)
    factors = tuple(max(1, int(np.ceil(s / FINE_SPACING_MM - 1e-6))) for s in grid.spacing)
    fine = grid.crop(window).subdivided(factors)
    labels = anatomy.labels(fine)
    uptake_of = lookup_table(suv_by_tissue)
    sigma = [PSF_FWHM_MM * FWHM_TO_SIGMA / s for s in fine.spacing]

    image = np.zeros(grid.shape, dtype=np.float32, order="F")
    # The uptake is looked up twice rather than copied: the labels are a quarter of its size.
    image[window] = _scanner_view(uptake_of[labels], sigma, factors)
    peak, peak_lps = _peak_near(image, grid, tumour)
    if noise > 0:
        image[window] += _scanner_view(_counting_noise(uptake_of[labels], fine, rng, noise), sigma, factors)
        np.maximum(image, 0.0, out=image)
    return PetImage(image, peak, peak_lps)


def _scanner_view(fine_volume: np.ndarray, sigma: list[float], factors: tuple[int, ...]) -> np.ndarray:
    """Blur by the point spread (in place) and average the sub-voxels of every PET voxel."""
    # Filtering the C-ordered transpose gives the same result; scipy is several times slower
    # filtering a Fortran-ordered array in place.
    gaussian_filter(fine_volume.T, sigma[::-1], output=fine_volume.T, mode="nearest")
    nx, ny, nz = (n // f for n, f in zip(fine_volume.shape, factors))
    # Fortran-order view: axis pairs (sub-voxel, voxel) without copying the volume.
    blocks = fine_volume.reshape(factors[0], nx, factors[1], ny, factors[2], nz, order="F")
    return np.asfortranarray(blocks.mean(axis=(0, 2, 4), dtype=np.float32))


def _counting_noise(uptake: np.ndarray, fine: Grid, rng: np.random.Generator, noise: float) -> np.ndarray:
    """Zero-mean noise (SUV) with the Poisson variance of each voxel's expected counts, written over ``uptake``."""
    voxel_ml = float(np.prod(fine.spacing)) / 1000.0
    counts_per_suv = COUNT_DENSITY_PER_ML * voxel_ml / noise**2
    for start in range(0, uptake.shape[2], NOISE_SLAB):
        slab = uptake[:, :, start : start + NOISE_SLAB]
        std = np.sqrt(slab / counts_per_suv)
        slab[...] = std * rng.standard_normal(slab.shape, dtype=np.float32)
    return uptake


def _peak_near(image: np.ndarray, grid: Grid, tumour: Tumour) -> tuple[float, tuple[float, float, float]]:
    """Highest value of the voxels centred in the tumour, and the LPS centre (mm) of that voxel.

    The ball is widened by half a voxel diagonal so that even voxels larger than the tumour
    leave at least one candidate; hotter organs nearby stay outside it.
    """
    reach = tumour.radius + float(np.linalg.norm(grid.spacing)) / 2
    centre = np.asarray(tumour.centre)
    window = grid.window(centre - reach, centre + reach)
    region = np.where(grid.squared_distances(centre, window) <= reach**2, image[window], -np.inf)
    index = np.unravel_index(int(np.argmax(region)), region.shape)
    return float(region[index]), grid.position(tuple(sl.start + i for sl, i in zip(window, index)))
