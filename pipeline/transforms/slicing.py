"""Cut co-registered volumes into axial 2-D slice pairs for the 2-D network, and stack results back.

A volume is ``(1, X, Y, Z)``; an axial slice is ``(1, X, Y)``, so a collated batch is ``(B, 1, X, Y)``.
``AxialSlicesd`` returns a list of per-slice dictionaries, which MONAI's ``Compose`` and
``list_data_collate`` treat like the samples of a multi-sample crop. Slices outside the body can be
skipped: they carry nothing to fuse, and ``SlicesToVolume`` fills them with 0 again.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform

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


class AxialSlices(Transform):
    """``(1, X, Y, Z)`` volume -> list of contiguous ``(1, X, Y)`` plain tensors (all, or ``indices``)."""

    def __call__(self, img: torch.Tensor, indices: Sequence[int] | None = None) -> list[torch.Tensor]:
        plain = img.as_tensor() if isinstance(img, MetaTensor) else img
        chosen = range(plain.shape[-1]) if indices is None else indices
        return [plain[..., k].contiguous() for k in chosen]


class AxialSlicesd(MapTransform):
    """Dictionary of volumes -> list of per-slice dictionaries with ``"slice_index"``.

    With ``skip_outside_body`` only slices where ``data[body_key]`` exceeds ``body_threshold`` (in that
    key's units, HU for a raw CT) over at least ``min_body_fraction`` of the slice are kept. Entries that
    are not tensors (e.g. ``"study_key"``) are copied into every slice dictionary.
    """

    def __init__(self, keys: KeysCollection = ("ct", "pet"), skip_outside_body: bool = True, body_key: str = "ct",
                 body_threshold: float = DEFAULT_BODY_THRESHOLD_HU,
                 min_body_fraction: float = DEFAULT_MIN_BODY_FRACTION, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.skip_outside_body = skip_outside_body
        self.body_key = body_key
        self.body_threshold = body_threshold
        self.min_body_fraction = min_body_fraction
        self.slicer = AxialSlices()

    def __call__(self, data: Mapping[Hashable, object]) -> list[dict[Hashable, object]]:
        keys = list(self.key_iterator(dict(data)))
        n_slices = data[keys[0]].shape[-1]
        if self.skip_outside_body:
            indices = body_slice_indices(data[self.body_key], self.body_threshold, self.min_body_fraction)
        else:
            indices = list(range(n_slices))
        sliced = {key: self.slicer(data[key], indices) for key in keys}
        shared = {k: v for k, v in data.items() if not isinstance(v, torch.Tensor)}
        return [{**shared, **{key: sliced[key][i] for key in keys}, "slice_index": k}
                for i, k in enumerate(indices)]


class SlicesToVolume(Transform):
    """Stack 2-D slices back into a ``(1, X, Y, Z)`` MetaTensor on ``reference``'s grid (missing slices 0)."""

    def __call__(self, slices: torch.Tensor | Sequence[torch.Tensor], slice_indices: Sequence[int] | torch.Tensor,
                 reference: MetaTensor) -> MetaTensor:
        indices = torch.as_tensor(slice_indices, dtype=torch.long).flatten()
        stacked = slices if isinstance(slices, torch.Tensor) else torch.stack(list(slices))
        stacked = stacked.reshape(len(indices), *reference.shape[1:3])  # (N, 1, X, Y) or (N, X, Y)
        volume = torch.zeros(reference.shape, dtype=torch.float32)
        volume[0, :, :, indices] = stacked.detach().to(torch.float32).permute(1, 2, 0)
        return MetaTensor(volume, meta={**reference.meta, "affine": reference.affine.clone()})


class SlicesToVolumed(MapTransform):
    """Dictionary twin of :class:`SlicesToVolume`: ``data[key]`` (N slices) + ``data[index_key]`` -> volume."""

    def __init__(self, keys: KeysCollection = "fused", ref_key: str = "ct", index_key: str = "slice_index",
                 allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.ref_key = ref_key
        self.index_key = index_key
        self.stacker = SlicesToVolume()

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.stacker(d[key], d[self.index_key], d[self.ref_key])
        return d
