"""A study's sources from a discovered pair, a NIfTI pair or a mapping, and one volume read from DICOM or NIfTI."""

from __future__ import annotations

import nibabel as nib
import numpy as np

from pipeline.io.discovery import NiftiPair, discover_studies
from pipeline.io.study_source import read_volume, study_sources


def test_a_discovered_pair_gives_its_series_and_key(dicom_factory):
    dicom_factory.series("s/ct", modality="CT")
    dicom_factory.series("s/pet", modality="PT")
    (pair,) = discover_studies(dicom_factory.root).pairs
    assert study_sources(pair) == {"ct": pair.ct, "pet": pair.pet, "study_key": pair.study_key}


def test_a_nifti_pair_gives_its_files_and_key(tmp_path):
    pair = NiftiPair(ct=tmp_path / "ct.nii.gz", pet=tmp_path / "pet.nii.gz")
    sources = study_sources(pair)
    assert (sources["ct"], sources["pet"]) == (pair.ct, pair.pet) and len(sources["study_key"]) == 12


def test_dicom_and_nifti_volumes_mix(dicom_factory):
    """A DICOM CT folder and a NIfTI PET mix, since both come out RAS and channel-first."""
    ct_folder = dicom_factory.series("ct", modality="CT")
    pet_path = dicom_factory.root / "pet.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((3, 3, 2), np.float32), np.eye(4)), pet_path)
    (ct, ct_headers), (pet, pet_headers) = read_volume(ct_folder, "CT"), read_volume(pet_path, "PT")
    assert ct.shape == (1, 6, 5, 4) and pet.shape == (1, 3, 3, 2)
    assert (ct.meta["modality"], pet.meta["modality"]) == ("CT", "PT")
    assert len(ct_headers) == 4 and pet_headers == []  # NIfTI has no slice headers
