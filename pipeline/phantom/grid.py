"""Axis-aligned voxel grids in patient coordinates (DICOM LPS, mm).

The anatomy is defined in millimetres and sampled on each scanner's own grid, so the CT and the
PET agree physically although their voxels differ. Every grid here has the identity orientation
(ImageOrientationPatient 1,0,0,0,1,0; slices ordered by increasing z): index axis 0 is the DICOM
column (x, to patient left), axis 1 the row (y, to posterior), axis 2 the slice (z, to head).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.io.patient_space import LPS_TO_RAS


@dataclass(frozen=True)
class Grid:
    """Shape (x, y, z), voxel spacing (mm) and LPS position (mm) of the centre of voxel (0, 0, 0)."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]

    @classmethod
    def centred(
        cls, shape: tuple[int, int, int], spacing: tuple[float, float, float], centre: tuple[float, float, float]
    ) -> Grid:
        """The grid of ``shape`` and ``spacing`` whose middle lies at ``centre`` (LPS mm)."""
        origin = tuple(float(c - (n - 1) / 2 * s) for n, s, c in zip(shape, spacing, centre))
        return cls(tuple(int(n) for n in shape), tuple(float(s) for s in spacing), origin)

    def axis(self, dim: int) -> np.ndarray:
        """Voxel-centre coordinates (mm) along one axis."""
        return self.origin[dim] + self.spacing[dim] * np.arange(self.shape[dim], dtype=np.float64)

    @property
    def extent(self) -> tuple[np.ndarray, np.ndarray]:
        """LPS bounding box (mm) of the voxel centres: (lowest corner, highest corner)."""
        low = np.asarray(self.origin)
        return low, low + np.asarray(self.spacing) * (np.asarray(self.shape) - 1)

    @property
    def affine_lps(self) -> np.ndarray:
        """4x4 voxel index -> LPS mm."""
        affine = np.diag([*self.spacing, 1.0])
        affine[:3, 3] = self.origin
        return affine

    @property
    def affine_ras(self) -> np.ndarray:
        """4x4 voxel index -> RAS mm, as NIfTI and MONAI expect."""
        return LPS_TO_RAS @ self.affine_lps

    def crop(self, window: tuple[slice, slice, slice]) -> Grid:
        """The sub-grid of the voxels ``window`` selects (slices with explicit start and stop)."""
        origin = tuple(o + sl.start * s for o, sl, s in zip(self.origin, window, self.spacing))
        return Grid(tuple(sl.stop - sl.start for sl in window), self.spacing, origin)

    def index_ranges(self, low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Start and stop indices of the voxels whose centres lie in boxes [low, high] (mm).

        ``low`` and ``high`` are (3,) or (n, 3) arrays; an empty range has start >= stop. Infinite
        bounds (an endless cylinder) are fine.
        """
        origin, spacing = np.asarray(self.origin), np.asarray(self.spacing)
        size = np.asarray(self.shape)
        start = np.clip(np.ceil((np.asarray(low) - origin) / spacing), 0, size).astype(int)
        stop = np.clip(np.floor((np.asarray(high) - origin) / spacing) + 1, 0, size).astype(int)
        return start, stop

    def window(self, low: np.ndarray, high: np.ndarray) -> tuple[slice, slice, slice] | None:
        """Index slices of the voxels whose centres lie in the box [low, high] (mm); None if none do."""
        start, stop = self.index_ranges(low, high)
        if np.any(start >= stop):
            return None
        return tuple(slice(int(a), int(b)) for a, b in zip(start, stop))

    def squared_distances(self, point: np.ndarray, window: tuple[slice, slice, slice] | None = None) -> np.ndarray:
        """Squared distances (mm^2) from ``point`` (LPS) of the voxel centres in ``window`` (default: all)."""
        window = window or tuple(slice(0, n) for n in self.shape)
        x, y, z = ((self.axis(d)[window[d]] - point[d]) ** 2 for d in range(3))
        return x[:, None, None] + y[None, :, None] + z[None, None, :]

    def position(self, index: tuple[int, int, int]) -> tuple[float, float, float]:
        """LPS centre (mm) of one voxel."""
        return tuple(float(o + s * i) for o, s, i in zip(self.origin, self.spacing, index))

    def subdivided(self, factors: tuple[int, int, int]) -> Grid:
        """The finer grid that splits every voxel into ``factors`` sub-voxels covering the same space."""
        spacing = tuple(s / f for s, f in zip(self.spacing, factors))
        origin = tuple(o - (f - 1) / 2 * s for o, f, s in zip(self.origin, factors, spacing))
        return Grid(tuple(n * f for n, f in zip(self.shape, factors)), spacing, origin)

    def describe(self) -> dict[str, list[float] | list[int]]:
        """JSON-ready geometry (shape, spacing, LPS origin) for the truth file."""
        return {"shape": list(self.shape), "spacing_mm": list(self.spacing), "origin_lps_mm": list(self.origin)}
