"""Writing the phantom's volumes as NIfTI, in NIfTI's RAS world convention.

The arrays keep the DICOM voxel order (x = column, y = row, z = slice); only the affine changes,
from LPS to RAS, so a NIfTI voxel and the same DICOM voxel sit at the same physical point.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.io.nifti import save_nifti
from pipeline.phantom.grid import Grid
from pipeline.phantom.rescale import StoredVolume


def save_grid_nifti(path: Path, volume: StoredVolume | np.ndarray, grid: Grid) -> None:
    """Save a volume on ``grid``; a uniformly rescaled one keeps its integers with the rescale in the header."""
    if isinstance(volume, StoredVolume) and volume.has_uniform_slope:
        save_nifti(path, volume.pixels, grid.affine_ras, slope_inter=(float(volume.slopes[0]), volume.intercept))
    else:
        data = volume.decoded() if isinstance(volume, StoredVolume) else volume
        save_nifti(path, data, grid.affine_ras)
