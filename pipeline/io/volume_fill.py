"""A loaded volume, filled a block of axial slices at a time: int16 while a CT's values are whole numbers.

Scanners store CT as integers x RescaleSlope 1 + an integer intercept (or a slope and intercept whose products are
whole), so its HU fit int16 exactly, in half float32's memory: loading a 512 x 512 x 2000 whole-body CT holds 1 GB,
never a float32 volume and an int16 copy of it at once. The loaders decode a bounded block of slices to float32 (the
values a float32 volume would hold) and put it here in z order; the first block that is not whole numbers in int16's
range turns the volume into float32 for good, the slices already put copied over exactly. Either way every voxel
holds the same value: the CT windows turn int16 into float32 where they scale it. PET stays float32 (SUV are
fractions).
"""

from __future__ import annotations

import numpy as np
import torch

# Modalities held as int16 while their values are whole numbers in its range.
WHOLE_NUMBER_MODALITIES = frozenset({"CT"})
# Axial slices a loader decodes before one write into the volume: a volume whose z runs fastest fills whole cache
# lines from a block of slices, and a new cache line per voxel from a single slice.
BLOCK_SLICES = 16


class VolumeFill:
    """The ``(1, X, Y, Z)`` voxels of one volume of ``modality`` (``voxels``), put a block of axial slices at a time."""

    def __init__(self, shape: tuple[int, int, int], modality: str) -> None:
        dtype = torch.int16 if modality in WHOLE_NUMBER_MODALITIES else torch.float32
        self.voxels = torch.empty((1, *shape), dtype=dtype)
        self._filled = 0

    def put(self, block: np.ndarray) -> None:
        """Append the next ``(X, Y, n)`` slices: float32, in any memory layout."""
        if self.voxels.dtype == torch.int16:
            # A value comes back from int16 unchanged exactly when it is a whole number in its range (NaN and values
            # out of range come back as some other number).
            with np.errstate(invalid="ignore"):
                whole = block.astype(np.int16)
            if np.array_equal(whole, block):
                block = whole
            else:
                self._widen()
        stop = self._filled + block.shape[2]
        self.voxels.numpy()[0, ..., self._filled : stop] = block
        self._filled = stop

    def _widen(self) -> None:
        """Hold the volume as float32 from now on; the slices put so far are copied over exactly."""
        wide = torch.empty(self.voxels.shape, dtype=torch.float32)
        wide[..., : self._filled] = self.voxels[..., : self._filled]
        self.voxels = wide
