"""Writing the phantom's volumes as NIfTI with nibabel, in NIfTI's RAS world convention.

The arrays keep the DICOM voxel order (x = column, y = row, z = slice); only the affine changes,
from LPS to RAS, so a NIfTI voxel and the same DICOM voxel sit at the same physical point.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from pipeline.io.atomic import atomic_write
from pipeline.phantom.grid import Grid
from pipeline.phantom.rescale import StoredVolume

#: NIfTI xform code "scanner anatomical": the affine is the scanner's patient space.
SCANNER_XFORM = 1


def save_nifti(path: Path, volume: StoredVolume | np.ndarray, grid: Grid) -> None:
    """Save a volume on ``grid``; a uniformly rescaled one keeps its integers with the rescale in the header."""
    if isinstance(volume, StoredVolume) and volume.has_uniform_slope:
        image = nib.Nifti1Image(volume.pixels, grid.affine_ras)
        image.header.set_slope_inter(float(volume.slopes[0]), volume.intercept)
    else:
        data = volume.decoded() if isinstance(volume, StoredVolume) else volume
        image = nib.Nifti1Image(data, grid.affine_ras)
    image.set_qform(grid.affine_ras, code=SCANNER_XFORM)
    image.set_sform(grid.affine_ras, code=SCANNER_XFORM)
    image.header.set_xyzt_units("mm")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as temporary:
        nib.save(image, temporary)
