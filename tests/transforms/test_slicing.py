"""Axial slicing for the 2-D network and stacking results back onto the CT grid."""

from __future__ import annotations

import torch
from monai.data import DataLoader, Dataset, MetaTensor, list_data_collate
from monai.transforms import Compose, Lambdad

from pipeline.transforms.slicing import (
    AxialSlices,
    AxialSlicesd,
    BodySlicesd,
    SlicesToVolume,
    SlicesToVolumed,
    body_slice_indices,
    flagged_slices,
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


def test_axial_slices_are_channel_first_2d():
    pet = _study()["pet"]
    slices = AxialSlices()(pet, [2, 5])
    assert [s.shape for s in slices] == [(1, 6, 5), (1, 6, 5)]
    assert not isinstance(slices[0], MetaTensor) and slices[0].is_contiguous()
    assert torch.equal(slices[1], pet[..., 5].as_tensor())


def test_slice_dicts_skip_outside_body():
    items = AxialSlicesd()(_study())
    assert [item["slice_index"] for item in items] == BODY
    assert all(item["study_key"] == "abc123" for item in items)
    assert torch.equal(items[0]["pet"], _study()["pet"][..., 1].as_tensor())
    assert len(AxialSlicesd(skip_outside_body=False)(_study())) == SHAPE[-1]


def test_round_trip_through_a_batch():
    study = _study()
    batch = list_data_collate(AxialSlicesd()(study))
    assert batch["ct"].shape == (len(BODY), 1, 6, 5) and batch["pet"].shape == (len(BODY), 1, 6, 5)
    volume = SlicesToVolume()(batch["pet"], batch["slice_index"], study["ct"])
    assert volume.shape == SHAPE and torch.equal(volume.affine, study["ct"].affine)
    assert volume.meta["modality"] == "CT"
    assert torch.equal(volume[..., BODY], study["pet"][..., BODY].as_tensor())
    assert torch.all(volume[..., [0, 3, 6]] == 0)


def test_dataloader_batches_slices_from_compose():
    """Compose maps later transforms over the slice list; the loader batches slices as (B, 1, X, Y)."""
    chain = Compose([AxialSlicesd(), Lambdad("pet", lambda x: x * 2)])
    loader = DataLoader(Dataset([_study()], transform=chain), batch_size=1, collate_fn=list_data_collate)
    (batch,) = list(loader)
    assert batch["pet"].shape == (len(BODY), 1, 6, 5)
    assert torch.equal(batch["pet"][0], 2 * _study()["pet"][..., 1].as_tensor())


def test_dictionary_stacker():
    study = _study()
    fused = [torch.ones(1, 6, 5) * k for k in BODY]
    out = SlicesToVolumed(keys="fused")({"fused": fused, "slice_index": BODY, "ct": study["ct"]})
    assert out["fused"].shape == SHAPE
    assert [float(out["fused"][0, 0, 0, k]) for k in range(SHAPE[-1])] == [0, 1, 2, 0, 4, 5, 0]
