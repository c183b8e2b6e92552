"""Datalists resolve every way a user can point at studies, and splits never share a study."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from pipeline.data import SPLIT_DEFAULTS, load_datalist, phantom_datalist, split_by_study, training_split
from pipeline.errors import InputError


def test_phantom_datalist_is_made_once_and_indexed(tiny_datalist, tiny_phantom_root):
    assert [item["study_index"] for item in tiny_datalist] == [0, 1]
    assert len({item["study_key"] for item in tiny_datalist}) == 2
    root = tiny_phantom_root
    before = (root / "seed_000" / "truth.json").stat().st_mtime_ns
    again = phantom_datalist(root, n_studies=2, size=(64, 64, 16), spacing=(6.0, 6.0, 8.0))
    assert again == tiny_datalist
    assert (root / "seed_000" / "truth.json").stat().st_mtime_ns == before  # reused, not re-made


def test_json_datalist_resolves_paths_relative_to_the_file(tiny_phantom_root, tmp_path):
    study = tiny_phantom_root / "seed_000" / "dicom"
    shutil.copytree(study, tmp_path / "case")
    listing = tmp_path / "datalist.json"
    listing.write_text(json.dumps([{"ct": "case/CT", "pet": "case/PET", "lesion_mask": "case/mask",
                                    "truth": "case/truth.json"},
                                   {"ct": "case/CT", "pet": "case/PET"}]))
    items = load_datalist(listing)
    assert items[0]["ct"] == str((tmp_path / "case" / "CT").resolve())
    assert items[0]["lesion_mask"] == str((tmp_path / "case" / "mask").resolve()) and "lesion_mask" not in items[1]
    assert items[0]["truth"] == str((tmp_path / "case" / "truth.json").resolve())
    assert items[0]["study_index"] == 0 and len(items[0]["study_key"]) == 12


def test_folder_datalist_discovers_dicom_studies(tiny_datalist, tiny_phantom_root):
    items = load_datalist(tiny_phantom_root)
    assert [item["study_key"] for item in items] == sorted(item["study_key"] for item in tiny_datalist)
    assert all(item["ct"].modality == "CT" and item["pet"].modality == "PT" for item in items)


@pytest.mark.parametrize("content", ['{"studies": [{"ct": "a"}]}', "not json", "[1, 2]"])
def test_bad_json_datalist_is_one_line_error(tmp_path, content):
    listing = tmp_path / "bad.json"
    listing.write_text(content)
    with pytest.raises(InputError, match="bad.json") as error:
        load_datalist(listing)
    assert "\n" not in str(error.value)


def test_missing_input_is_reported(tmp_path):
    with pytest.raises(InputError, match="no such file or folder"):
        load_datalist(tmp_path / "absent")


def test_split_is_by_study_deterministic_and_disjoint():
    datalist = [{"ct": f"c{i}", "pet": f"p{i}", "study_key": f"k{i}", "study_index": i} for i in range(10)]
    first, second = split_by_study(datalist, 0.3, seed=4), split_by_study(datalist, 0.3, seed=4)
    assert first == second
    train_keys = {item["study_key"] for item in first["train"]}
    val_keys = {item["study_key"] for item in first["val"]}
    assert len(val_keys) == 3 and not train_keys & val_keys and len(train_keys | val_keys) == 10
    assert split_by_study(datalist[:2], 0.1)["val"], "two studies still hold one out"


def test_a_curated_split_is_kept_and_only_the_rest_is_drawn():
    splits = ["train", "val", None, None, None, None, "test", "test"]
    studies = [{"study_key": f"k{i}", "split": split} for i, split in enumerate(splits)]
    split = split_by_study(studies, val_fraction=0.25, seed=3)
    train_keys, val_keys = ({s["study_key"] for s in split[name]} for name in ("train", "val"))
    assert "k0" in train_keys and "k1" in val_keys
    assert len(val_keys) == 2 and len(train_keys) == 4  # one of the four free studies held out
    assert train_keys.isdisjoint(val_keys) and not {"k6", "k7"} & (train_keys | val_keys)  # test studies: in neither


def test_evaluation_takes_the_split_its_checkpoint_was_trained_with(tmp_path):
    checkpoint = tmp_path / "model.pt"
    torch.save({"model": {}, "card": {"seed": 3, "val_fraction": 0.5, "phantom_studies": 8}}, checkpoint)
    assert training_split(checkpoint) == {"seed": 3, "val_fraction": 0.5, "phantom_studies": 8}
    assert training_split(checkpoint, seed=None, val_fraction=0.25) == {"seed": 3, "val_fraction": 0.25,
                                                                        "phantom_studies": 8}  # given wins
    torch.save({"model": {}, "card": {"seed": 3}}, checkpoint)  # a card from before it recorded the rest
    assert training_split(checkpoint) == {**SPLIT_DEFAULTS, "seed": 3}
    assert training_split(tmp_path / "absent.pt") == SPLIT_DEFAULTS  # baselines only
