"""The whole data path on the synthetic thorax phantom: discover, load, SUV, resample, window."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.transforms import Compose

from pipeline.io.discovery import discover_studies, find_nifti_pair
from pipeline.transforms import CTWindowd, LoadStudyd, PETToSUVd, ResampleToReferenced
from pipeline.transforms.windowing import WINDOW_PRESETS

phantom = pytest.importorskip("pipeline.phantom", reason="pipeline.phantom (the phantom maker) is not available")


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> tuple[Path, dict]:
    made = phantom.make_phantom(tmp_path_factory.mktemp("phantom"), ct_shape=(96, 96, 24), ct_spacing=(3.0, 3.0, 5.0),
                                seed=1)
    return made.root, json.loads(Path(made.truth_json).read_text())


@pytest.fixture(scope="module")
def volumes(study) -> dict:
    root, _ = study
    (pair,) = discover_studies(root).pairs
    chain = Compose([LoadStudyd(), PETToSUVd(), ResampleToReferenced(keys="pet", ref_key="ct"),
                     CTWindowd("ct", "lung", output_key="ct_lung"),
                     CTWindowd("ct", "mediastinal", output_key="ct_mediastinal")])
    return chain(pair)


def _hot_centroid_ras(pet: torch.Tensor) -> np.ndarray:
    """World centroid of the voxels above half the maximum, within 30 mm of the maximum."""
    values = pet[0].numpy()
    index = np.stack(np.meshgrid(*(np.arange(n) for n in values.shape), indexing="ij"), axis=-1)
    affine = pet.affine.numpy()
    world = index @ affine[:3, :3].T + affine[:3, 3]
    peak = world[np.unravel_index(np.argmax(values), values.shape)]
    hot = (values > 0.5 * values.max()) & (np.linalg.norm(world - peak, axis=-1) < 30.0)
    return np.average(world[hot], axis=0, weights=values[hot])


def test_discovery_finds_the_pair(study):
    result = discover_studies(study[0])
    assert len(result.pairs) == 1 and not result.failures
    assert result.pairs[0].pet.is_attenuation_corrected


def test_suvmax_matches_truth(study, volumes):
    expected = study[1]["tumour"]["expected_image_suvmax"]
    assert volumes["pet"].meta["Units"] == "SUVbw"
    assert float(volumes["pet"].max()) == pytest.approx(expected, rel=0.05)


def test_tumour_centre_after_resampling(study, volumes):
    assert volumes["pet"].shape == volumes["ct"].shape
    centre_ras = np.asarray(study[1]["tumour"]["centre_ras_mm"])
    assert np.linalg.norm(_hot_centroid_ras(volumes["pet"]) - centre_ras) < 2.0


def test_windows_follow_the_formula(volumes):
    hu = volumes["ct"].numpy().astype(np.float64)
    for name in ("lung", "mediastinal"):
        width, level = WINDOW_PRESETS[name]
        expected = np.clip((hu - (level - width / 2)) / width, 0, 1)
        np.testing.assert_allclose(volumes[f"ct_{name}"].numpy(), expected, atol=1e-6)


def test_background_suv_is_physiological(volumes):
    ct, pet = volumes["ct"][0], volumes["pet"][0]
    soft_tissue = (ct > 0) & (ct < 80)
    assert 0.6 < float(pet[soft_tissue].median()) < 1.6


def test_nifti_copy_gives_the_same_volumes(study, volumes):
    nifti = LoadStudyd()(find_nifti_pair(study[0] / "nifti"))
    np.testing.assert_allclose(nifti["ct"].affine.numpy(), volumes["ct"].affine.numpy(), atol=1e-4)
    np.testing.assert_allclose(nifti["ct"].numpy(), volumes["ct"].numpy(), atol=0.5)


def test_stacked_items_are_views_of_the_network_input():
    import torch
    from monai.data import MetaTensor

    from pipeline.transforms.data_path import StackItemsd

    data = {"ct_lung": MetaTensor(torch.ones(1, 2, 2, 2), meta={"Units": "HU"}),
            "pet_scaled": MetaTensor(torch.full((1, 2, 2, 2), 0.5), meta={"Units": "SUVbw"})}
    out = StackItemsd(keys=["ct_lung", "pet_scaled"], name="image", dim=0)(data)
    assert out["image"].shape == (2, 2, 2, 2)
    assert out["pet_scaled"].data_ptr() == out["image"][1].data_ptr()  # no second copy
    assert torch.equal(out["pet_scaled"], data["pet_scaled"]) and out["pet_scaled"].meta["Units"] == "SUVbw"


def test_preprocessed_study_collates_in_a_monai_dataloader(study):
    """The bundle's workflows batch the preprocessed study: its meta (per-slice PET timing too) must collate."""
    from monai.data import DataLoader, Dataset

    from pipeline.transforms.data_path import study_preprocessing

    root, _ = study
    (pair,) = discover_studies(root).pairs
    batch = next(iter(DataLoader(Dataset([pair], transform=study_preprocessing()), batch_size=1)))
    assert batch["image"].shape[:2] == (1, 3)
    assert len(batch["pet"].meta["pet_slices"]) == pair.pet.n_slices
