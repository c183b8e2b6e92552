"""Loading as the first step of a MONAI transform chain, so a bundle config can start from a study.

Every volume leaves it with array axis 2 the one nearest the patient's head-foot axis: the 2-D fusion, the PET
coverage flags and the body-slice flags all run along axis 2, which must be the axial slices whatever door the
study came in by.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform
from pydicom.dataset import Dataset

from pipeline.errors import InputError
from pipeline.io.discovery import nearest_patient_axes, not_axial
from pipeline.io.study_source import STUDY_MODALITIES, StudySource, read_volume, study_sources


def axial_last(volume: MetaTensor, headers: Sequence[Dataset] = ()) -> MetaTensor:
    """``volume`` with its axes permuted, voxels and the affine's columns together, into the order of the patient's
    left-right, front-back and head-foot axes they lie nearest, where axis 2 is not already the head-foot one (a
    NIfTI saved as a coronal or sagittal stack): the same voxels in the same places, fused on axial planes.

    A DICOM series (one with slice ``headers``) is refused instead: a CT's fused DICOM series is written frame by
    frame on its own slices (:mod:`pipeline.io.derived_series`), which would then be coronal or sagittal, and a PET's
    per-slice SUV factors (decay, scale factors) run along its own slices, not the restacked axis 2. Discovery applies
    the same rule (:func:`pipeline.io.discovery.not_axial`) and fails such a study up front; this is the backstop for a
    series given by folder.
    """
    affine = np.asarray(volume.affine, dtype=float)
    problem = not_axial(affine[:3, :3], volume.meta.get("modality", "DICOM"))
    if not problem:
        return volume
    if headers:
        raise InputError(f"{volume.meta.get('filename_or_obj', 'volume')}: {problem}")
    order = np.argsort(nearest_patient_axes(affine[:3, :3]))
    voxels = volume.as_tensor().permute(0, *(1 + order)).contiguous()
    meta = {key: value for key, value in volume.meta.items() if key != "affine"}
    meta["spatial_shape"] = np.array(voxels.shape[1:])
    return MetaTensor(voxels, affine=torch.as_tensor(affine[:, [*order, 3]]), meta=meta)


class LoadStudyd(MapTransform):
    """Replace the sources under ``keys`` by loaded volumes (see :func:`axial_last`); a StudyPair/NiftiPair is accepted
    as the data.

    ``modalities`` maps each key to the modality a NIfTI file holds (DICOM headers name their own);
    the defaults cover ``"ct"`` and ``"pet"``. ``keep_headers`` also puts each DICOM series' slice
    headers (pixel data dropped; empty for NIfTI) under ``<key>_headers``, for the writers of derived
    series, so no file is read twice; they hold patient identifiers and do not collate, so a
    bundle's data loader leaves them out.
    """

    def __init__(self, keys: KeysCollection = ("ct", "pet"), modalities: Mapping[str, str] | None = None,
                 allow_missing_keys: bool = False, keep_headers: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.keep_headers = keep_headers
        self.modalities = {**STUDY_MODALITIES, **(modalities or {})}
        unknown = [k for k in self.keys if k not in self.modalities]
        if unknown:
            raise ValueError(f"no modality given for keys {unknown}; pass modalities={{key: 'CT' or 'PT'}}")

    def __call__(self, data: StudySource) -> dict[Hashable, object]:
        d = study_sources(data)
        missing = [key for key in self.keys if key not in d]
        if missing and not self.allow_missing_keys:  # a datalist entry without its PET, say: one line, not a KeyError
            raise InputError(f"study description has no {missing[0]!r} entry (keys: {sorted(map(str, d))})")
        for key in self.key_iterator(d):
            volume, headers = read_volume(d[key], self.modalities[key])
            d[key] = axial_last(volume, headers)
            if self.keep_headers:
                d[f"{key}_headers"] = headers
        return d
