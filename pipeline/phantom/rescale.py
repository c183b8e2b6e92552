"""Integer pixel storage with DICOM's linear rescale: value = stored * RescaleSlope + RescaleIntercept.

The DICOM files and the NIfTI copies are both made from one :class:`StoredVolume`, so every
reader decodes the same numbers from either. Slopes are rounded to what a DS element can hold
(16 characters) *before* the pixels are quantised, so the header reproduces the values exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom.valuerep import DSfloat

INT16_MAX = np.iinfo(np.int16).max


@dataclass(frozen=True)
class StoredVolume:
    """int16 pixels (x, y, z) plus the slope of each slice and one intercept."""

    pixels: np.ndarray
    slopes: np.ndarray
    intercept: float

    @classmethod
    def with_slope_per_slice(cls, values: np.ndarray) -> StoredVolume:
        """Quantise non-negative values so each slice's maximum uses the full int16 range (as PET does)."""
        pixels = np.empty(values.shape, dtype=np.int16, order="F")
        slopes = np.ones(values.shape[2])
        for k in range(values.shape[2]):
            peak = float(values[:, :, k].max())
            if peak > 0:
                slopes[k] = float(DSfloat(peak / INT16_MAX, auto_format=True))
            pixels[:, :, k] = np.clip(np.rint(values[:, :, k] / slopes[k]), 0, INT16_MAX)
        return cls(pixels, slopes, 0.0)

    @property
    def has_uniform_slope(self) -> bool:
        """Whether one slope serves every slice (then NIfTI can keep the integers)."""
        return bool(np.all(self.slopes == self.slopes[0]))

    def decoded(self) -> np.ndarray:
        """float32 physical values, as a DICOM reader applying the rescale gets them."""
        return (self.pixels * self.slopes[None, None, :] + self.intercept).astype(np.float32)
