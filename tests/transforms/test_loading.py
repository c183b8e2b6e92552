"""LoadStudyd: the first step of a transform chain, from a study description to volumes."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
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


def _restacked(path: Path, out: Path, axes: tuple[int, int, int]) -> Path:
    """The NIfTI at ``path`` saved with its array axes in the order ``axes`` and the affine's columns to match: the
    same voxels in the same places, stored as another stack (``(0, 2, 1)``: coronal slices along axis 2)."""
    image = nib.load(path)
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj).transpose(axes), image.affine[:, [*axes, 3]]), out)
    return out


@pytest.mark.parametrize("axes", [(0, 2, 1), (2, 0, 1), (1, 2, 0)])
def test_a_volume_stored_as_another_stack_is_loaded_with_axial_slices_along_axis_2(nifti_pair, tmp_path, axes):
    restacked = _restacked(nifti_pair.ct, tmp_path / "restacked.nii.gz", axes)
    axial, loaded = LoadStudyd(keys="ct")({"ct": nifti_pair.ct})["ct"], LoadStudyd(keys="ct")({"ct": restacked})["ct"]
    np.testing.assert_array_equal(loaded.numpy(), axial.numpy())
    np.testing.assert_array_equal(loaded.affine.numpy(), axial.affine.numpy())
    assert loaded.is_contiguous() and tuple(loaded.meta["spatial_shape"]) == (4, 4, 3)


def test_a_dicom_series_whose_slices_are_not_axial_is_refused_in_one_line():
    """A CT's derived DICOM series is written on its own slices, and a PET's per-slice SUV factors run along its own
    slices, so neither can be restacked as a NIfTI is."""
    from pydicom.dataset import Dataset

    from pipeline.transforms.loading import axial_last

    coronal = np.array([[-1.0, 0, 0, 0], [0, 0, -3.0, 0], [0, -1.5, 0, 0], [0, 0, 0, 1]])  # axis 2 runs front-back
    volume = MetaTensor(torch.zeros(1, 2, 3, 4), affine=torch.as_tensor(coronal),
                        meta={"modality": "CT", "filename_or_obj": "series/CT"})
    with pytest.raises(InputError) as info:
        axial_last(volume, [Dataset()])
    assert str(info.value) == ("series/CT: the CT's slices are not axial (their normal is 90 degrees from the "
                               "head-foot axis): coronal and sagittal CT series are not supported, give an axial "
                               "reconstruction")
    volume.meta["modality"] = "PT"
    with pytest.raises(InputError, match="the PT's slices are not axial .* coronal and sagittal PT series are not"):
        axial_last(volume, [Dataset()])
    assert axial_last(volume).shape == (1, 2, 4, 3)  # the same volume from a NIfTI is restacked


def test_a_coronal_stack_is_fused_on_axial_planes_into_the_same_fused_volume(tmp_path):
    """End to end: a CT and a shorter PET stored as coronal stacks give the fused NIfTI, affine and PET coverage of
    their axial originals (the fusion, the coverage flags and the blanking of slices without PET ran along the
    coronal axis before)."""
    from pipeline.fusion.selection import build_fusers
    from pipeline.fusion.streaming import fuse_study, fused_filename
    from pipeline.fusion.writers import NiftiSink
    from pipeline.phantom import make_phantom

    make_phantom(tmp_path / "phantom", ct_shape=(32, 32, 12), ct_spacing=(12.0, 12.0, 12.0), seed=1)
    nifti = tmp_path / "phantom" / "nifti"
    pet = nib.load(nifti / "pet.nii.gz")
    short = nib.Nifti1Image(np.asarray(pet.dataobj)[..., : pet.shape[2] // 2], pet.affine)  # the lower half
    nib.save(short, tmp_path / "pet_short.nii.gz")
    axial = NiftiPair(ct=nifti / "ct.nii.gz", pet=tmp_path / "pet_short.nii.gz")
    studies = {"axial": axial, "coronal": NiftiPair(ct=_restacked(axial.ct, tmp_path / "ct_cor.nii.gz", (0, 2, 1)),
                                                    pet=_restacked(axial.pet, tmp_path / "pet_cor.nii.gz", (0, 2, 1)))}
    fused, covered = {}, {}
    for name, pair in studies.items():
        study = fuse_study(pair, build_fusers(("average",), device="cpu"), windows=("lung",), pet_factor=1e-3)
        study.stream([NiftiSink(study, tmp_path / name)])
        fused[name] = nib.load(tmp_path / name / fused_filename("lung", "average"))
        covered[name] = study.data["pet_slices"]
    assert 0 < int(covered["axial"].sum()) < covered["axial"].numel()  # some CT slices lack PET
    assert torch.equal(covered["coronal"], covered["axial"])
    np.testing.assert_array_equal(fused["coronal"].affine, fused["axial"].affine)
    values = np.asarray(fused["axial"].dataobj)
    assert values[..., covered["axial"].numpy()].max() > 0 and values[..., ~covered["axial"].numpy()].max() == 0
    np.testing.assert_array_equal(np.asarray(fused["coronal"].dataobj), values)
