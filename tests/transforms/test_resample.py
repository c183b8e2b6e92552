"""Resampling onto a reference grid in world space (RAS in, LPS inside SimpleITK)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from pipeline.errors import InputError
from pipeline.transforms.resample import (
    BlankUncoveredSlicesd,
    ResampleToReference,
    ResampleToReferenced,
    blank_uncovered,
)

GRADIENT = np.array([0.1, -0.2, 0.3])


def _world(affine: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """World (RAS) coordinates of every voxel, shape (X, Y, Z, 3)."""
    index = np.stack(np.meshgrid(*(np.arange(n) for n in shape), indexing="ij"), axis=-1)
    return index @ affine[:3, :3].T + affine[:3, 3]


def _volume(affine: np.ndarray, shape: tuple[int, int, int], values: np.ndarray | None = None,
            **meta) -> MetaTensor:
    values = _world(affine, shape) @ GRADIENT + 5.0 if values is None else values
    return MetaTensor(torch.as_tensor(values[None], dtype=torch.float32), affine=torch.as_tensor(affine),
                      meta={"filename_or_obj": meta.pop("name", "vol"), **meta})


def _affine(spacing, origin, rotation_deg: float = 0.0) -> np.ndarray:
    angle = np.deg2rad(rotation_deg)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag(spacing)
    affine[:3, 3] = origin
    return affine


# A DICOM-like PET (RAS x and y reversed) and NIfTI-like / rotated CT grids inside its field of view.
PET = _affine((-4.0, -4.0, 4.0), (40.0, 40.0, -20.0))
PET_SHAPE = (20, 20, 10)
CT_GRIDS = [_affine((-1.5, -1.5, 2.0), (20.0, 20.0, -10.0)),
            _affine((1.5, -1.5, 2.0), (-20.0, 20.0, -10.0)),
            _affine((1.5, 1.5, 2.0), (-5.0, -12.0, -10.0), rotation_deg=30.0)]
CT_SHAPE = (24, 22, 8)


@pytest.mark.parametrize("ct_affine", CT_GRIDS)
def test_linear_field_is_reproduced_in_world_space(ct_affine):
    pet, ct = _volume(PET, PET_SHAPE), _volume(ct_affine, CT_SHAPE)
    out = ResampleToReference()(pet, ct)
    assert out.shape == ct.shape and out.dtype == torch.float32
    np.testing.assert_array_equal(out.affine.numpy(), ct.affine.numpy())
    expected = _world(ct_affine, CT_SHAPE) @ GRADIENT + 5.0
    np.testing.assert_allclose(out[0].numpy(), expected, atol=1e-3)


def test_outside_is_default_value_and_meta_kept():
    pet = _volume(PET, PET_SHAPE, Units="SUVbw", name="pet")
    far = _volume(_affine((2.0, 2.0, 2.0), (500.0, 0.0, 0.0)), (4, 4, 4), name="ct")
    out = ResampleToReference(default_value=-7.0)(pet, far)
    assert torch.all(out == -7.0)
    assert out.meta["Units"] == "SUVbw" and out.meta["resampled_to"] == "ct"


def test_blob_stays_at_its_world_position():
    centre = np.array([2.0, 11.0, -2.0])  # mid-field of CT_GRIDS[2]
    distance = np.linalg.norm(_world(PET, PET_SHAPE) - centre, axis=-1)
    pet = _volume(PET, PET_SHAPE, values=np.exp(-(distance / 6.0) ** 2))
    ct_affine = CT_GRIDS[2]
    out = ResampleToReference()(pet, _volume(ct_affine, CT_SHAPE))[0].numpy()
    hot = out > 0.5 * out.max()
    centroid = np.average(_world(ct_affine, CT_SHAPE)[hot], axis=0, weights=out[hot])
    assert np.linalg.norm(centroid - centre) < 0.5


def test_nearest_keeps_labels():
    labels = np.random.default_rng(0).integers(0, 3, PET_SHAPE).astype(float)
    out = ResampleToReference(mode="nearest")(_volume(PET, PET_SHAPE, values=labels), _volume(CT_GRIDS[0], CT_SHAPE))
    assert set(np.unique(out.numpy())) <= {0.0, 1.0, 2.0}


def test_frame_of_reference_mismatch_is_refused():
    pet = _volume(PET, PET_SHAPE, FrameOfReferenceUID="1.2.3", name="pet_dir")
    ct = _volume(CT_GRIDS[0], CT_SHAPE, FrameOfReferenceUID="1.2.4", name="ct_dir")
    with pytest.raises(InputError, match=r"^pet_dir: FrameOfReferenceUID differs from that of ct_dir"):
        ResampleToReference()(pet, ct)


def test_sheared_affine_is_refused():
    sheared = _affine((2.0, 2.0, 2.0), (0.0, 0.0, 0.0))
    sheared[0, 2] = 1.0
    with pytest.raises(InputError, match="sheared"):
        ResampleToReference()(_volume(PET, PET_SHAPE), _volume(sheared, (4, 4, 4)))


def test_unknown_mode():
    with pytest.raises(ValueError, match="unknown interpolation mode"):
        ResampleToReference(mode="cubic-ish")


def test_dictionary_twin_both_directions():
    data = {"ct": _volume(CT_GRIDS[0], CT_SHAPE), "pet": _volume(PET, PET_SHAPE)}
    onto_ct = ResampleToReferenced()(data)
    assert onto_ct["pet"].shape == data["ct"].shape and onto_ct["ct"] is data["ct"]
    onto_pet = ResampleToReferenced(keys="ct", ref_key="pet", default_value=-1000.0)(data)
    assert onto_pet["ct"].shape == data["pet"].shape
    assert float(onto_pet["ct"].min()) == -1000.0  # the CT covers only part of the PET field of view


def test_slabs_give_the_same_result(monkeypatch):
    pet, ct = _volume(PET, PET_SHAPE), _volume(CT_GRIDS[2], CT_SHAPE)
    whole = ResampleToReference()(pet, ct)
    monkeypatch.setattr("pipeline.transforms.resample._SLAB_VOXELS", 5 * CT_SHAPE[1] * CT_SHAPE[2])
    in_slabs = ResampleToReference()(pet, ct)  # 24 x-columns in slabs of 5
    assert torch.equal(whole, in_slabs)


@pytest.mark.parametrize("pet_z_mm, expected", [(0.0, [True] * 10), (-15.0, [True] * 5 + [False] * 5),
                                                (12.0, [False] * 4 + [True] * 6)])
def test_covered_slices_follow_the_pet_extent(pet_z_mm, expected):
    from pipeline.transforms.resample import covered_slices

    ct = MetaTensor(torch.zeros((1, 4, 4, 10)), affine=torch.diag(torch.tensor([2.0, 2.0, 3.0, 1.0])))
    pet_affine = torch.diag(torch.tensor([4.0, 4.0, 6.0, 1.0]))
    pet_affine[2, 3] = 1.5 + pet_z_mm  # 5 PET slices of 6 mm, faces at -1.5 ... 28.5 mm before the shift
    pet = MetaTensor(torch.zeros((1, 2, 2, 5)), affine=pet_affine)
    assert covered_slices(pet, ct).tolist() == expected


def test_a_pet_covering_no_ct_slice_is_refused():
    from pipeline.transforms.resample import PETCoveraged

    ct = MetaTensor(torch.zeros((1, 4, 4, 10)), affine=torch.diag(torch.tensor([2.0, 2.0, 3.0, 1.0])))
    pet_affine = torch.diag(torch.tensor([4.0, 4.0, 6.0, 1.0]))
    pet_affine[2, 3] = 500.0  # half a metre above the CT
    pet = MetaTensor(torch.zeros((1, 2, 2, 5)), affine=pet_affine, meta={"filename_or_obj": "pet_folder"})
    with pytest.raises(InputError, match="pet_folder: the PET does not overlap its CT axially"):
        PETCoveraged()({"ct": ct, "pet": pet})


@pytest.mark.parametrize("pet_x_mm, expected", [(0.0, 1.0), (-6.0, 0.5), (5000.0, 0.0)])
def test_the_in_plane_overlap_is_the_share_of_the_ct_field_within_the_pet(pet_x_mm, expected):
    from pipeline.transforms.resample import IN_PLANE_SAMPLES, in_plane_overlap

    ct = MetaTensor(torch.zeros((1, 7, 7, 10)), affine=torch.diag(torch.tensor([2.0, 2.0, 3.0, 1.0])))
    pet_affine = torch.diag(torch.tensor([4.0, 4.0, 6.0, 1.0]))
    pet_affine[:2, 3] = torch.tensor([pet_x_mm, 0.0])
    pet = MetaTensor(torch.zeros((1, 4, 4, 5)), affine=pet_affine)  # x faces at -2 ... 14 mm before the shift
    # The CT's 17 columns of points lie at x = 0 ... 12 mm, 0.75 mm apart: -6 mm leaves those of x <= 8 mm inside.
    inside = np.count_nonzero(np.linspace(0, 12, IN_PLANE_SAMPLES) <= 8.0) / IN_PLANE_SAMPLES
    assert in_plane_overlap(pet, ct) == pytest.approx(inside if expected == 0.5 else expected)


def test_a_pet_beside_its_ct_in_plane_is_refused():
    """A PET whose positions or spacing put it beside the CT (5 m off here) was fused as CT alone and reported ok."""
    from pipeline.transforms.resample import PETCoveraged

    ct = MetaTensor(torch.zeros((1, 4, 4, 10)), affine=torch.diag(torch.tensor([2.0, 2.0, 3.0, 1.0])))
    pet_affine = torch.diag(torch.tensor([4.0, 4.0, 6.0, 1.0]))
    pet_affine[0, 3] = 5000.0
    pet = MetaTensor(torch.zeros((1, 2, 2, 5)), affine=pet_affine, meta={"filename_or_obj": "pet_folder"})
    with pytest.raises(InputError, match="pet_folder: the PET does not overlap its CT in-plane"):
        PETCoveraged()({"ct": ct, "pet": pet})
    pet_affine[0, 3] = 0.0
    over = MetaTensor(torch.zeros((1, 2, 2, 5)), affine=pet_affine)
    assert PETCoveraged()({"ct": ct, "pet": over})["pet_slices"].all()


def test_slices_without_pet_are_blanked_one_study_or_a_batch():
    covered = torch.tensor([False, True, True, False])
    fused = torch.rand(2, 3, 3, 4) + 0.1
    kept = fused[..., 1:3].clone()
    assert blank_uncovered(fused, covered) is fused  # in place: a streamed slab is not copied
    assert torch.equal(fused[..., 1:3], kept) and not fused[..., [0, 3]].any()
    batch = {"pred": torch.rand(2, 1, 3, 3, 4) + 0.1, "pet_slices": torch.stack([covered, ~covered])}
    out = BlankUncoveredSlicesd()(batch)["pred"]
    assert not out[0, ..., [0, 3]].any() and out[0, ..., 1:3].all()
    assert not out[1, ..., 1:3].any() and out[1, ..., [0, 3]].all()
