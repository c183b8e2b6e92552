"""Loading a whole study from a discovered pair, a NIfTI pair or a mapping of sources."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from pipeline.errors import InputError
from pipeline.io.discovery import NiftiPair, discover_studies
from pipeline.io.study_source import load_study


def test_from_discovered_pair(dicom_factory):
    dicom_factory.series("s/ct", modality="CT")
    dicom_factory.series("s/pet", modality="PT")
    (pair,) = discover_studies(dicom_factory.root).pairs
    study = load_study(pair)
    assert (study["ct"].meta["modality"], study["pet"].meta["modality"]) == ("CT", "PT")
    assert study["study_key"] == pair.study_key


def test_from_mixed_mapping(dicom_factory):
    """A DICOM CT folder and a NIfTI PET mix, since both come out RAS and channel-first."""
    ct_folder = dicom_factory.series("ct", modality="CT")
    pet_path = dicom_factory.root / "pet.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((3, 3, 2), np.float32), np.eye(4)), pet_path)
    study = load_study({"ct": ct_folder, "pet": pet_path, "case": "x"})
    assert study["ct"].shape == (1, 6, 5, 4) and study["pet"].shape == (1, 3, 3, 2)
    assert study["pet"].meta["modality"] == "PT" and study["case"] == "x"


def test_from_nifti_pair(tmp_path):
    for name in ("ct", "pet"):
        nib.save(nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), np.eye(4)), tmp_path / f"{name}.nii.gz")
    study = load_study(NiftiPair(ct=tmp_path / "ct.nii.gz", pet=tmp_path / "pet.nii.gz"))
    assert study["ct"].meta["modality"] == "CT" and len(study["study_key"]) == 12


def test_missing_entry():
    with pytest.raises(InputError, match="no 'pet' entry"):
        load_study({"ct": "somewhere"})
