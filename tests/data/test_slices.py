"""Training pairs: every body slice of each cached study, once per CT window, as views of the cache."""

from __future__ import annotations

import torch
from monai.data import CacheDataset, DataLoader

from pipeline.data import SlicePairDataset, body_slice_cache, phantom_datalist
from pipeline.transforms.data_path import study_preprocessing

WINDOWS = ("lung", "mediastinal")


def _short_pet_study(root) -> list[dict]:
    """A PET shorter than its CT: the CT slices it misses are outside the fusable body."""
    return phantom_datalist(root, n_studies=1, size=(32, 32, 16), spacing=(12.0, 12.0, 8.0),
                            pet_shape=(24, 24, 10), pet_spacing=(16.0, 16.0, 8.0))


def test_each_body_slice_is_a_pair_per_window(tmp_path):
    (study,) = _short_pet_study(tmp_path)
    whole = study_preprocessing(WINDOWS)(dict(study))
    body = torch.nonzero(whole["body_slices"]).flatten().tolist()
    cache = body_slice_cache([study], study_preprocessing(WINDOWS), progress=False)
    assert isinstance(cache, CacheDataset) and 0 < len(body) < whole["image"].shape[-1]
    pairs = SlicePairDataset(cache, WINDOWS)
    assert len(pairs) == len(WINDOWS) * len(body)
    image = whole["image"].as_tensor()
    for index, (z, w) in enumerate((z, w) for z in body for w in range(len(WINDOWS))):
        assert torch.equal(pairs[index]["ct"], image[w : w + 1, ..., z])
        assert torch.equal(pairs[index]["pet"], image[-1:, ..., z])
        assert pairs[index]["window"] == w
    assert pairs[0]["ct"].shape == (1, 32, 32) and not pairs[0]["ct"].equal(pairs[1]["ct"])
    assert pairs[0]["pet"].untyped_storage().data_ptr() == cache[0]["image"].untyped_storage().data_ptr()  # a view


def test_pairs_batch_and_transform_in_a_loader(tmp_path):
    cache = body_slice_cache(_short_pet_study(tmp_path), study_preprocessing(WINDOWS), progress=False)
    pairs = SlicePairDataset(cache, WINDOWS,
                             transform=lambda pair: {**pair, "ct": 2 * pair["ct"], "pet": 2 * pair["pet"]})
    batch = next(iter(DataLoader(pairs, batch_size=4)))
    assert batch["ct"].shape == batch["pet"].shape == (4, 1, 32, 32)
    assert batch["window"].tolist() == [0, 1, 0, 1]  # each slice in both windows, in order
    assert torch.equal(batch["pet"][0], 2 * cache[0]["image"][-1:, ..., 0])
