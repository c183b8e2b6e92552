"""Load the CT and PET volumes of one study, whatever form it was given in.

A study arrives as a discovered :class:`StudyPair`, a :class:`NiftiPair`, or a mapping of modality key
to a DICOM folder/file list or a NIfTI file; this module is the one place that dispatches among them
(:class:`~pipeline.transforms.loading.LoadStudyd` loads a study through it).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from monai.data import MetaTensor
from pydicom.dataset import Dataset

from pipeline.io.dicom import read_series
from pipeline.io.discovery import NiftiPair, SeriesInfo, StudyPair
from pipeline.io.nifti import load_nifti

VolumeSource = SeriesInfo | str | os.PathLike[str] | Sequence[str | os.PathLike[str]]
StudySource = StudyPair | NiftiPair | Mapping[str, VolumeSource]
# Dictionary key of each volume and the DICOM modality it holds (NIfTI files do not say).
STUDY_MODALITIES = {"ct": "CT", "pet": "PT"}


def _is_nifti(source: VolumeSource) -> bool:
    return isinstance(source, (str, os.PathLike)) and Path(source).name.endswith((".nii", ".nii.gz"))


def read_volume(source: VolumeSource, modality: str) -> tuple[MetaTensor, list[Dataset]]:
    """Load a NIfTI file (tagged with ``modality``) or a DICOM series (whose header names its modality),
    with the DICOM slices' headers (none for NIfTI)."""
    return (load_nifti(source, modality), []) if _is_nifti(source) else read_series(source)


def study_sources(study: StudySource) -> dict[str, VolumeSource]:
    """The ``{"ct": ..., "pet": ...}`` sources of a study, plus its ``study_key`` when known."""
    if isinstance(study, (StudyPair, NiftiPair)):
        return {"ct": study.ct, "pet": study.pet, "study_key": study.study_key}
    return dict(study)
