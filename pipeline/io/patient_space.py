"""DICOM's patient coordinates (LPS: x to the left, y to the back) against MONAI's and NIfTI's (RAS).

The two differ by flipping x and y; the flip is its own inverse, so one matrix converts both ways.
Every affine that crosses between a DICOM header and a MetaTensor goes through it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
RAS_TO_LPS = LPS_TO_RAS

VOXEL_MM = (0.01, 50.0)
"""The voxel sizes a scanner writes, in mm: a micro-CT's at the finest, coarser than any PET's at the most. Outside
this range a header is damaged or hostile (a spacing of 0, -4 or 1e6 mm), and its volume would be drawn metres wide
or nowhere; the DICOM and NIfTI loaders refuse it alike."""


def voxel_size_problem(sizes_mm: Iterable[float], names: Sequence[str]) -> str:
    """Why voxel sizes ``sizes_mm`` (named ``names`` in the message, as the header calls them) are no scanner's, in
    a line's words; "" when they are."""
    finest, coarsest = VOXEL_MM
    for size, name in zip(sizes_mm, names):
        if not finest <= size <= coarsest:  # NaN fails too
            return f"{name} {size:g} mm is not a voxel size ({finest:g}-{coarsest:g} mm)"
    return ""
