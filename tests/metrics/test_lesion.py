"""Lesion contrast: masks from the PET and from phantom truth, the ring, contrast and ratio."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from monai.data.utils import affine_to_spacing
from scipy import ndimage

from pipeline.metrics import (
    lesion_contrast,
    lesion_contrast_ratio,
    lesion_mask_from_pet,
    phantom_lesion_mask,
    ring_mask,
)
from pipeline.transforms.data_path import study_preprocessing
from pipeline.transforms.windowing import DEFAULT_SUV_MAX

SPACING = (2.0, 2.0, 3.0)
BACKGROUND, HOT = 0.1, 0.8


def hot_ball(shape=(24, 24, 12), centre=(12, 12, 6), radius_mm=7.0) -> np.ndarray:
    """A [0, 1] PET: a uniform hot ball on a flat background."""
    offsets = np.indices(shape) - np.reshape(centre, (3, 1, 1, 1))
    distance = np.sqrt(sum((o * s) ** 2 for o, s in zip(offsets, SPACING)))
    return np.where(distance <= radius_mm, HOT, BACKGROUND)


@pytest.fixture
def ball():
    pet = hot_ball()
    lesion = lesion_mask_from_pet(pet)
    return pet, lesion, ring_mask(lesion, SPACING)


def test_pet_mask_keeps_only_the_component_of_the_hottest_voxel():
    pet = hot_ball()
    pet[1:3, 1:3, 1:3] = 0.5  # above 40 % of the max, but not connected to the lesion
    pet[12, 12, 6] = 1.0
    lesion = lesion_mask_from_pet(pet)
    assert lesion[12, 12, 6] and not lesion[1:3, 1:3, 1:3].any()
    np.testing.assert_array_equal(lesion, hot_ball() > BACKGROUND)


def test_pet_mask_joins_diagonal_neighbours_and_is_empty_for_a_blank_pet():
    pet = np.zeros((5, 5, 5))
    pet[1, 1, 1], pet[2, 2, 2] = 1.0, 0.5  # touching by a corner only: 26-connected
    assert lesion_mask_from_pet(pet).sum() == 2
    assert not lesion_mask_from_pet(np.zeros((4, 4, 4))).any()
    with pytest.raises(ValueError, match="fraction"):
        lesion_mask_from_pet(pet, fraction=0.0)


def test_ring_is_the_shell_within_reach_and_excludes_the_lesion(ball):
    _, lesion, ring = ball
    assert ring.any() and not (ring & lesion).any()
    distance = ndimage.distance_transform_edt(~lesion, sampling=SPACING)
    np.testing.assert_array_equal(ring, (distance > 0) & (distance <= 10.0))
    assert not ring_mask(np.zeros((4, 4, 4), bool), SPACING).any()


def test_pet_keeps_contrast_and_fused_copies_keep_ratio_one(ball):
    pet, lesion, ring = ball
    assert lesion_contrast(pet, lesion, ring) == pytest.approx(HOT - BACKGROUND)
    assert lesion_contrast_ratio(pet, pet, lesion, ring)["ratio"] == pytest.approx(1.0)


def test_ratio_falls_as_a_flat_ct_dilutes_the_lesion(ball):
    pet, lesion, ring = ball
    flat_ct = np.full(pet.shape, 0.5)
    averaged = lesion_contrast_ratio((pet + flat_ct) / 2, pet, lesion, ring)["ratio"]
    assert 0.0 < averaged < 1.0
    assert lesion_contrast_ratio(flat_ct, pet, lesion, ring)["ratio"] == pytest.approx(0.0, abs=1e-12)


def test_a_fusion_that_shows_the_tumour_darker_than_its_surroundings_scores_below_zero(ball):
    pet, lesion, ring = ball
    bright_tissue = np.full(pet.shape, 0.9)
    darkened = np.where(lesion, 0.5 * pet, bright_tissue)  # the tumour in PET grey inside bright CT tissue
    assert lesion_contrast_ratio(darkened, pet, lesion, ring)["ratio"] < 0


def test_undefined_contrast_and_ratio_are_nan(ball):
    pet, lesion, ring = ball
    assert math.isnan(lesion_contrast(pet, np.zeros_like(lesion), ring))
    assert lesion_contrast(np.zeros_like(pet), lesion, ring) == 0.0  # a flat image has no contrast, defined
    cold_lesion = np.where(lesion, BACKGROUND, HOT)
    assert math.isnan(lesion_contrast_ratio(pet, cold_lesion, lesion, ring)["ratio"])
    with pytest.raises(ValueError, match="shapes differ"):
        lesion_contrast(pet[:-1], lesion, ring)


def test_phantom_mask_matches_a_full_grid_ball_on_an_oblique_grid():
    angle = np.deg2rad(30)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([-2.0, -2.0, 3.0])
    affine[:3, 3] = (10.0, -20.0, 5.0)
    shape = (30, 30, 12)
    truth = {"tumour": {"centre_lps_mm": [-5.0, 30.0, 20.0], "radius_mm": 9.0}}
    mask = phantom_lesion_mask(truth, affine, shape)
    world = (affine[:3, :3] @ np.indices(shape).reshape(3, -1)).T + affine[:3, 3]
    expected = np.linalg.norm(world - [5.0, -30.0, 20.0], axis=1) <= 9.0  # LPS -> RAS negates x and y
    assert mask.sum() > 50
    np.testing.assert_array_equal(mask, expected.reshape(shape))


def test_phantom_mask_lands_on_the_hottest_pet_of_a_tiny_phantom(tiny_datalist, tiny_phantom_root):
    image = study_preprocessing()(tiny_datalist[0])["image"]
    pet = image[-1].numpy()
    truth = json.loads((tiny_phantom_root / "seed_000" / "truth.json").read_text())
    lesion = phantom_lesion_mask(truth, image.affine, pet.shape)
    spacing = np.asarray(affine_to_spacing(image.affine, r=3))
    ball_mm3 = 4 / 3 * np.pi * truth["tumour"]["radius_mm"] ** 3
    assert lesion.sum() * np.prod(spacing) == pytest.approx(ball_mm3, rel=0.25)
    assert lesion[np.unravel_index(pet.argmax(), pet.shape)]
    # most of the designed tumour's SUV above its surroundings, on the scaled PET
    designed = (truth["tumour"]["designed_suv"] - 1.0) / DEFAULT_SUV_MAX
    assert lesion_contrast(pet, lesion, ring_mask(lesion, spacing)) > 0.5 * designed
