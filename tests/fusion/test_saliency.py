"""PET-saliency Laplacian fusion: the CT untouched outside uptake, the lesion kept where the CT is bright."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.fusion import get_fuser, pet_saliency
from pipeline.fusion.saliency import dilate
from pipeline.metrics.lesion import lesion_contrast_ratio, lesion_mask_from_pet, ring_mask


def lung_window_lesion(size: int = 96) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft tissue near white (as in the lung window) with a bone bar; a PET lesion darker than it."""
    y, x = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    ct = torch.zeros(size, size)
    ct[8:88, 8:88] = 0.93
    ct[20:76, 70:74] = 1.0
    pet = 0.05 + 0.65 * torch.exp(-((y - 48) ** 2 + (x - 40) ** 2) / (2 * 5.0**2))
    pet[ct == 0] = 0.0
    return ct[None, None], pet[None, None]


def test_saliency_is_one_on_uptake_and_its_halo_and_zero_far_from_it():
    pet = torch.zeros(1, 1, 64, 64)
    pet[..., 30:34, 30:34] = 0.6
    weight = pet_saliency(pet, low=0.12, high=0.25, radius=8)
    assert weight[0, 0, 32, 32] > 0.95
    assert weight[0, 0, 32, 37] > 0.85  # 4 pixels from the uptake: inside the halo
    assert weight[0, 0, 32, 60] < 1e-3 and weight[0, 0, 2, 2] < 1e-3
    assert pet_saliency(pet, radius=0)[0, 0, 32, 40] < pet_saliency(pet, radius=8)[0, 0, 32, 40]


@pytest.mark.parametrize("radius", [0, 1, 3, 8, 20])
def test_dilation_is_the_max_pool_over_the_square(radius):
    generator = torch.Generator().manual_seed(radius)
    image = torch.rand(3, 1, 37, 50, generator=generator) * (torch.rand(3, 1, 37, 50, generator=generator) > 0.9)
    expected = F.max_pool2d(image, 2 * radius + 1, stride=1, padding=radius)
    assert torch.equal(dilate(image, radius), expected)


def test_without_uptake_the_fused_image_is_the_ct():
    generator = torch.Generator().manual_seed(0)
    ct = torch.rand(2, 1, 48, 40, generator=generator)
    pet = 0.1 * torch.rand(2, 1, 48, 40, generator=generator)  # below the 0.12 threshold everywhere
    fused = get_fuser("saliency")(ct, pet)
    # Only PET details stronger than the CT's can show; with this faint PET they barely do.
    assert torch.mean((fused - ct).abs()) < 0.01


def test_the_lesion_stays_visible_where_the_ct_is_brighter_than_the_pet():
    ct, pet = lung_window_lesion()
    pet_np = pet[0, 0].numpy()[..., None]
    lesion = lesion_mask_from_pet(pet_np)
    ring = ring_mask(lesion, (1.0, 1.0, 1.0), ring_mm=8.0)

    def ratio(name: str) -> float:
        fused = get_fuser(name)(ct, pet)[0, 0].numpy()[..., None]
        return lesion_contrast_ratio(fused, pet_np, lesion, ring)["ratio"]

    saliency = ratio("saliency")
    assert saliency > 0.5
    assert saliency > ratio("average") + 0.2  # (Laplacian keeps a small, evenly hot lesion better still)
    assert ratio("max") < 0.1  # max fusion hides it: the soft tissue is brighter than the lesion


def test_the_ct_bone_keeps_its_contrast_outside_the_halo():
    ct, pet = lung_window_lesion()
    fused = get_fuser("saliency")(ct, pet)
    bone, tissue = fused[0, 0, 20:76, 71].mean(), fused[0, 0, 20:76, 80].mean()
    assert float(bone - tissue) == pytest.approx(0.07, abs=0.02)
    assert np.isclose(float(fused[0, 0, 2, 2]), 0.0, atol=1e-3)  # air stays black


@pytest.mark.parametrize("options", [{"low": 0.3, "high": 0.3}, {"low": -0.1}, {"radius": -1}, {"ct_keep": 1.0},
                                     {"pet_gain": 0.5}])
def test_invalid_settings_are_refused(options):
    with pytest.raises(ValueError, match="saliency fusion needs"):
        get_fuser("saliency", **options)


def test_kept_ct_and_a_stretched_pet_show_a_mildly_avid_tumour_brighter_than_its_surroundings():
    ct, pet = lung_window_lesion()
    y, x = np.mgrid[:96, :96]
    tumour = ((y - 48) ** 2 + (x - 40) ** 2 <= 12**2)[..., None]  # the whole tumour, as a contour outlines it
    mild = torch.where(torch.from_numpy(tumour[..., 0]), torch.tensor(0.2), pet)  # SUV 3 throughout: mildly avid
    ring = ring_mask(tumour, (1.0, 1.0, 1.0), ring_mm=10.0)

    def ratio(**settings) -> float:
        fused = get_fuser("saliency", **settings)(ct, mild)[0, 0].numpy()[..., None]
        return lesion_contrast_ratio(fused, mild[0, 0].numpy()[..., None], tumour, ring)["ratio"]

    assert ratio(low=0.1, high=0.22) < 0  # the PET's base replaces brighter tissue: the tumour comes out dark
    # half the CT kept under a stretched PET, over a halo that takes in the tumour's surroundings
    assert ratio(low=0.05, high=0.15, radius=16, ct_keep=0.5, pet_gain=3.0) > 0.5
    default = get_fuser("saliency")(ct, pet)
    assert torch.equal(default, get_fuser("saliency", ct_keep=0.0, pet_gain=1.0)(ct, pet))
