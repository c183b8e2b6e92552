"""Body slices and axial slabs: what the 2-D network is fed, and where a slab lies."""

from __future__ import annotations

import torch
from monai.data import MetaTensor

from pipeline.transforms.slicing import (
    BodySlicesd,
    SelectBodySlicesd,
    axial_slab,
    body_slice_indices,
    flagged_slices,
    spread_slices,
)

SHAPE = (1, 6, 5, 7)
BODY = [1, 2, 4, 5]  # slices 0, 3 and 6 are air only


def _study() -> dict[str, object]:
    ct = torch.full(SHAPE, -1000.0)
    ct[0, 1:4, 1:4, BODY] = 40.0
    pet = torch.arange(torch.tensor(SHAPE).prod().item(), dtype=torch.float32).reshape(SHAPE)
    affine = torch.diag(torch.tensor([-0.9, -0.9, 2.5, 1.0], dtype=torch.float64))
    return {"ct": MetaTensor(ct, affine=affine, meta={"modality": "CT"}), "pet": MetaTensor(pet, affine=affine),
            "study_key": "abc123"}


def test_body_slices():
    assert body_slice_indices(_study()["ct"]) == BODY
    assert body_slice_indices(_study()["ct"], min_fraction=0.5) == []


def test_body_slice_flags_travel_with_the_study():
    flags = BodySlicesd(keys="ct")(_study())["body_slices"]
    assert flags.dtype == torch.bool and flags.shape == (SHAPE[-1],)
    assert flagged_slices(flags) == BODY


def test_a_slab_keeps_its_place_in_the_patient():
    ct = _study()["ct"]
    slab = axial_slab(ct, 2, 5)
    assert slab.shape == (1, 6, 5, 3) and torch.equal(slab.as_tensor(), ct[..., 2:5].as_tensor())
    assert torch.allclose(slab.affine[:3, 3], ct.affine[:3, 3] + 2 * ct.affine[:3, 2])
    assert slab.meta["modality"] == "CT"


def test_only_the_flagged_slices_are_kept_for_scoring():
    study = BodySlicesd(keys="ct")(_study())
    kept = SelectBodySlicesd(keys=["ct", "pet"])(study)
    assert kept["pet"].shape == (*SHAPE[:-1], len(BODY))
    assert torch.equal(kept["pet"].as_tensor(), _study()["pet"][..., BODY].as_tensor())
    assert bool((kept["ct"] > -1000).flatten(0, 2).any(dim=0).all())  # every kept slice holds body


def test_slices_spread_evenly_from_first_to_last():
    body = list(range(10, 30))
    assert spread_slices(body, 3) == [10, 20, 29]  # the ends and the middle (rounded half to even)
    assert spread_slices(body, 0) == spread_slices(body, 20) == spread_slices(body, 50) == body  # 0: all
    assert spread_slices([], 3) == []
