"""Which axial slices a study's body occupies, and axial slabs that keep their place in the patient.

The 2-D network sees a volume ``(C, X, Y, Z)`` one axial slice ``(C, X, Y)`` at a time; slices
outside the body carry nothing to fuse, so training, scoring and previews use the body slices only.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

# HU between air (-1000) and fat (-100): a voxel above it is tissue (or the table, hence a minimum fraction).
DEFAULT_BODY_THRESHOLD_HU = -500.0
DEFAULT_MIN_BODY_FRACTION = 0.01


def body_slice_indices(volume: torch.Tensor, threshold: float = DEFAULT_BODY_THRESHOLD_HU,
                       min_fraction: float = DEFAULT_MIN_BODY_FRACTION) -> list[int]:
    """Indices of axial slices in which at least ``min_fraction`` of the voxels exceed ``threshold``."""
    n_x, n_y, n_z = volume.shape[1:]
    # Counted a few slices at a time: a whole-volume mask is summed in int64, twice the CT's size.
    counts = torch.cat([torch.count_nonzero(volume[0, ..., z : z + 16] > threshold, dim=(0, 1))
                        for z in range(0, n_z, 16)])
    fraction = counts.to(torch.float32) / (n_x * n_y)
    return torch.nonzero(fraction >= min_fraction).flatten().tolist()


def axial_slab(volume: MetaTensor, start: int, stop: int) -> MetaTensor:
    """Slices ``start:stop`` of a ``(C, X, Y, Z)`` volume, a view whose affine places them where they lie."""
    affine = volume.affine.clone()
    affine[:3, 3] += start * affine[:3, 2]
    meta = {key: value for key, value in volume.meta.items() if key != "affine"}  # the volume's own stays
    return MetaTensor(volume.as_tensor()[..., start:stop], affine=affine, meta=meta)


def flagged_slices(flags: torch.Tensor) -> list[int]:
    """Indices of the slices a bool ``(Z,)`` flag tensor (``body_slices``) marks."""
    return torch.nonzero(flags).flatten().tolist()


def spread_slices(indices: Sequence[int], count: int) -> list[int]:
    """At most ``count`` of ``indices``, evenly spread from the first to the last (all of them when ``count`` is 0):
    the slices a report scores or a preview shows, from head to feet."""
    indices = list(indices)
    if count == 0 or len(indices) <= count:
        return indices
    return [indices[i] for i in np.linspace(0, len(indices) - 1, num=count).round().astype(int)]


class BodySlicesd(MapTransform):
    """Flag the axial slices inside the body: ``data[output_key]`` = bool ``(Z,)`` from the HU CT ``data[key]``.

    Computed once with the preprocessing (and kept in the study cache), so slicing for training and
    scoring for evaluation pick the same slices without needing the HU CT again. ``within_key`` names
    flags a slice must also carry (``pet_slices``: covered by the PET).
    """

    def __init__(self, keys: KeysCollection = "ct", output_key: str = "body_slices",
                 threshold: float = DEFAULT_BODY_THRESHOLD_HU, min_fraction: float = DEFAULT_MIN_BODY_FRACTION,
                 within_key: str | None = None):
        super().__init__(keys)
        self.output_key = output_key
        self.within_key = within_key
        self.threshold = threshold
        self.min_fraction = min_fraction

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            flags = torch.zeros(d[key].shape[-1], dtype=torch.bool)
            flags[body_slice_indices(d[key], self.threshold, self.min_fraction)] = True
            d[self.output_key] = flags & d[self.within_key] if self.within_key else flags
        return d


class SelectBodySlicesd(MapTransform):
    """Keep only the axial slices ``data[flags_key]`` flags (``body_slices``) of each ``(C, X, Y, Z)`` volume.

    For scoring, not writing: the kept slices no longer sit where the affine says. Training's validation
    scores the model on these slices only, the ones every report scores, so the metric that picks the
    checkpoint and the reported one agree.
    """

    def __init__(self, keys: KeysCollection = "image", flags_key: str = "body_slices",
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.flags_key = flags_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        kept = torch.nonzero(d[self.flags_key]).flatten()
        for key in self.key_iterator(d):
            d[key] = d[key].index_select(-1, kept.to(d[key].device))
        return d
