"""LoadStudyd: the first step of a transform chain, from a study description to volumes."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from monai.data import MetaTensor
from monai.transforms import Compose

from pipeline.io.discovery import NiftiPair
from pipeline.errors import InputError
from pipeline.transforms import CTWindowd, LoadStudyd


@pytest.fixture
def nifti_pair(tmp_path: Path) -> NiftiPair:
    affine = np.diag([-2.0, -2.0, 3.0, 1.0])
    nib.save(nib.Nifti1Image(np.full((4, 4, 3), -600.0, np.float32), affine), tmp_path / "ct.nii.gz")
    nib.save(nib.Nifti1Image(np.ones((2, 2, 3), np.float32), affine * [2, 2, 1, 1]), tmp_path / "pet.nii.gz")
    return NiftiPair(ct=tmp_path / "ct.nii.gz", pet=tmp_path / "pet.nii.gz")


def test_load_study_from_a_pair(nifti_pair):
    study = LoadStudyd()(nifti_pair)
    assert isinstance(study["ct"], MetaTensor) and study["ct"].shape == (1, 4, 4, 3)
    assert (study["ct"].meta["modality"], study["pet"].meta["modality"]) == ("CT", "PT")
    assert study["study_key"] == nifti_pair.study_key


def test_dictionary_version_starts_a_chain(nifti_pair):
    chain = Compose([LoadStudyd(), CTWindowd("ct", "lung", output_key="ct_lung")])
    out = chain({"ct": str(nifti_pair.ct), "pet": nifti_pair.pet, "case": "demo"})
    assert float(out["ct_lung"].max()) == pytest.approx(0.5)  # -600 HU is the lung window's level
    assert out["case"] == "demo"


def test_only_the_named_keys_are_loaded(nifti_pair):
    out = LoadStudyd(keys="ct")({"ct": nifti_pair.ct, "pet": "left alone"})
    assert isinstance(out["ct"], MetaTensor) and out["pet"] == "left alone"


def test_extra_keys_need_a_modality(nifti_pair):
    with pytest.raises(ValueError, match="no modality given"):
        LoadStudyd(keys=["ct", "mr"])
    out = LoadStudyd(keys=["ct", "ct2"], modalities={"ct2": "CT"})({"ct": nifti_pair.ct, "ct2": nifti_pair.ct})
    assert out["ct2"].meta["modality"] == "CT"


def test_a_study_without_its_pet_is_one_line():
    with pytest.raises(InputError, match=r"no 'pet' entry \(keys: \['ct', 'study_key'\]\)"):
        LoadStudyd()({"ct": "somewhere", "study_key": "abc"})
