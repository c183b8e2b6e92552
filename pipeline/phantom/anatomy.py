"""Painting an anatomy (an ordered list of tissue solids) into a label volume on any grid.

Structures are painted in order, later ones over earlier ones, optionally only over given
tissues (a vessel replaces lung but never bone). Work is done in slabs of slices and, within a
slab, only inside each structure's bounding box, so a 512x512x300 label volume needs no
full-size temporaries. Volumes are in Fortran order, so every axial slice is one contiguous
block for the slice-by-slice consumers (CT simulation, DICOM writing, NIfTI).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from pipeline.phantom.grid import Grid
from pipeline.phantom.shapes import Shape
from pipeline.phantom.tissues import Tissue

#: Slices painted at a time: bounds the float temporaries of the inside tests.
SLAB_SLICES = 8


@dataclass(frozen=True)
class Structure:
    """A solid filled with one tissue, optionally only where the volume already holds ``over``."""

    shape: Shape
    tissue: Tissue
    over: frozenset[Tissue] | None = None


@dataclass(frozen=True)
class Anatomy:
    """An ordered collection of structures; the first usually fills the body."""

    structures: tuple[Structure, ...]

    def plus(self, *structures: Structure) -> Anatomy:
        """This anatomy with more structures painted last."""
        return Anatomy(self.structures + structures)

    @cached_property
    def _boxes(self) -> tuple[np.ndarray, np.ndarray]:
        """Bounding boxes of all structures as two (n, 3) arrays, to cull them per slab in one step."""
        boxes = np.array([structure.shape.bounds() for structure in self.structures])
        return boxes[:, 0], boxes[:, 1]

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """LPS box (mm) outside which everything is air."""
        low, high = self._boxes
        return low.min(axis=0), high.max(axis=0)

    def labels(self, grid: Grid) -> np.ndarray:
        """uint8 label volume (x, y, z) of the tissue at every voxel centre; AIR outside the body."""
        volume = np.full(grid.shape, Tissue.AIR, dtype=np.uint8, order="F")
        nx, ny, nz = grid.shape
        for start in range(0, nz, SLAB_SLICES):
            slab = (slice(0, nx), slice(0, ny), slice(start, min(start + SLAB_SLICES, nz)))
            self._paint(volume[slab], grid.crop(slab))
        return volume

    def _paint(self, volume: np.ndarray, grid: Grid) -> None:
        axes = [grid.axis(dim) for dim in range(3)]
        first, stop = grid.index_ranges(*self._boxes)
        for n in np.flatnonzero(np.all(first < stop, axis=1)):
            structure = self.structures[n]
            window = tuple(slice(int(a), int(b)) for a, b in zip(first[n], stop[n]))
            x, y, z = (axis[sl] for axis, sl in zip(axes, window))
            inside = structure.shape.contains(x[:, None, None], y[None, :, None], z[None, None, :])
            target = volume[window]
            if structure.over is not None:
                inside &= np.isin(target, list(structure.over))
            target[inside] = structure.tissue
