"""One choice of data for every workflow: a study cache, else ``input``, else phantoms in ``dataset_dir``."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.data import (LoadCachedStudyd, datalist_description, default_dataset_dir, workflow_datalist,
                           workflow_preprocessing)
from pipeline.errors import InputError


def test_phantoms_are_made_outside_the_bundle(monkeypatch, tmp_path):
    monkeypatch.setenv("MONAI_DATA_DIRECTORY", str(tmp_path))
    assert Path(default_dataset_dir()) == tmp_path / "dcif_gan_phantom"
    monkeypatch.delenv("MONAI_DATA_DIRECTORY")
    assert Path(default_dataset_dir()).is_relative_to(Path.home() / ".cache")


def test_a_cache_comes_before_an_input_and_an_input_before_the_phantoms(tiny_study_cache, tiny_phantom_root, tmp_path):
    empty = tmp_path / "never_filled"
    cached = workflow_datalist(tiny_phantom_root, empty, 2, study_cache=tiny_study_cache)
    assert [item["split"] for item in cached] == ["train", "val"] and all(item["image"].endswith(".npz") for item in cached)
    given = workflow_datalist(tiny_phantom_root / "seed_001", empty, 2)
    assert len(given) == 1 and "ct" in given[0]
    phantoms = workflow_datalist(None, tiny_phantom_root, 2)
    assert len(phantoms) == 2 and all(item["truth"].startswith(str(tiny_phantom_root)) for item in phantoms)
    assert not empty.exists()


def test_a_cache_is_read_as_cached_and_anything_else_through_the_data_path(tiny_study_cache):
    assert isinstance(workflow_preprocessing(["lung"], 15.0, tiny_study_cache), LoadCachedStudyd)
    assert not isinstance(workflow_preprocessing(["lung"], 15.0), LoadCachedStudyd)


def test_pet_overrides_with_a_cache_are_refused_not_ignored(tiny_study_cache):
    with pytest.raises(InputError, match="PET overrides weight_kg apply to studies read"):
        workflow_preprocessing(["lung"], 15.0, tiny_study_cache, weight_kg=80.0, dose_bq=None, units=None)


def test_studies_read_from_files_carry_their_known_tumour_as_the_cache_does(tiny_datalist):
    study = workflow_preprocessing(["lung"], 15.0)(dict(tiny_datalist[0]))
    assert study["label"].shape == (1, *study["image"].shape[1:]) and study["label"].sum() > 0


def test_a_single_study_is_described_in_the_singular(tiny_phantom_root):
    """The card and MLflow said "1 phantom studies (generated)" of a one-phantom training."""
    assert datalist_description([{}]) == "1 phantom study (generated)"
    assert datalist_description([{}], input=str(tiny_phantom_root)) == "1 study from an input folder"
    assert datalist_description([{}, {}], input=[{}, {}]) == "2 studies from a datalist in the config"
