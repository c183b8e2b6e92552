"""The study cache: the preprocessing's network input, stored once at 8 bits and read back without DICOM."""

from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest
import torch

from pipeline.data import LoadCachedStudyd, SlicePairDataset, body_slice_cache, cache_studies, load_cached_datalist
from pipeline.errors import InputError
from pipeline.io.rtstruct import rtstruct_mask
from pipeline.metrics import phantom_lesion_mask
from pipeline.transforms.data_path import study_preprocessing
from tests.io.conftest import write_rtstruct


def test_cached_studies_match_the_preprocessing_within_one_grey_level(tiny_study_cache, tiny_datalist):
    cached = load_cached_datalist(tiny_study_cache)
    assert [c["study_key"] for c in cached] == [s["study_key"] for s in tiny_datalist]
    assert [c["split"] for c in cached] == ["train", "val"] and {c["origin"] for c in cached} == {"phantom"}
    loaded = LoadCachedStudyd()(cached[0])
    fresh = study_preprocessing()(dict(tiny_datalist[0]))
    assert loaded["image"].shape == fresh["image"].shape
    assert torch.allclose(loaded["image"].as_tensor(), fresh["image"].as_tensor(), atol=0.5 / 255 + 1e-6)
    assert torch.allclose(loaded["image"].affine, fresh["image"].affine.to(loaded["image"].affine.dtype))
    assert torch.equal(loaded["body_slices"], fresh["body_slices"])


def test_the_index_names_no_source_and_no_patient(tiny_study_cache, tiny_phantom_root):
    text = (tiny_study_cache / "datalist.json").read_text()
    index = json.loads(text)
    assert all(set(entry) == {"image", "study_key", "split", "origin"} for entry in index["studies"])
    header = pydicom.dcmread(next((tiny_phantom_root / "seed_000" / "dicom" / "CT").rglob("*.dcm")))
    assert str(header.PatientName) not in text and str(header.PatientID) not in text
    assert "dicom" not in text


def test_a_slice_step_keeps_every_kth_slice_with_a_matching_affine(tmp_path, tiny_datalist):
    (every_other,) = cache_studies([{**tiny_datalist[0], "slice_step": 2}], tmp_path, progress=False)
    full = study_preprocessing()(dict(tiny_datalist[0]))
    loaded = LoadCachedStudyd()(every_other)
    assert loaded["image"].shape[-1] == (full["image"].shape[-1] + 1) // 2
    assert torch.allclose(loaded["image"].affine[:, 2], 2 * full["image"].affine[:, 2].to(torch.float64))
    assert torch.equal(loaded["body_slices"], full["body_slices"][::2])


def test_training_slices_come_from_the_cache(tiny_study_cache):
    (train, _) = load_cached_datalist(tiny_study_cache)
    samples = SlicePairDataset(body_slice_cache([train], LoadCachedStudyd(), progress=False), ["lung", "mediastinal"])
    n_body = int(LoadCachedStudyd()(train)["body_slices"].sum())
    assert len(samples) == 2 * n_body  # one sample per body slice and window
    assert all(s["ct"].shape == s["pet"].shape and s["ct"].ndim == 3 for s in samples)


def test_other_windows_than_the_cache_holds_are_refused(tiny_study_cache):
    (train, _) = load_cached_datalist(tiny_study_cache)
    with pytest.raises(InputError, match="cached with windows") as error:
        LoadCachedStudyd(windows=["lung"])(train)
    assert "\n" not in str(error.value)


def test_an_index_entry_without_its_file_is_one_clear_line(tmp_path):
    (tmp_path / "datalist.json").write_text(json.dumps({"format": 1, "windows": ["lung"], "suv_max": 15.0,
                                                        "studies": [{"study_key": "abc"}]}))
    with pytest.raises(InputError, match="needs an 'image' file") as error:
        load_cached_datalist(tmp_path)
    assert "\n" not in str(error.value) and "datalist.json" in str(error.value)


@pytest.mark.parametrize("damage", ["truncated", "not a cache"])
def test_a_damaged_cache_is_one_clear_line_naming_the_file(tmp_path, tiny_study_cache, damage):
    (train, _) = load_cached_datalist(tiny_study_cache)
    broken = tmp_path / "broken.npz"
    if damage == "truncated":
        broken.write_bytes(open(train["image"], "rb").read()[:200])
        with pytest.raises(InputError, match="unreadable cached study") as error:
            LoadCachedStudyd()({**train, "image": str(broken)})
    else:
        with pytest.raises(InputError, match="not a study cache") as error:
            load_cached_datalist(tmp_path)
    assert "\n" not in str(error.value) and str(tmp_path) in str(error.value)


def test_cached_values_are_eight_bit(tiny_study_cache):
    (train, _) = load_cached_datalist(tiny_study_cache)
    with np.load(train["image"]) as arrays:
        assert arrays["image"].dtype == np.uint8 and arrays["body_slices"].dtype == bool


def test_the_cache_keeps_a_known_tumour_as_the_label(tiny_study_cache, tiny_datalist, tmp_path):
    loaded = LoadCachedStudyd()(load_cached_datalist(tiny_study_cache)[0])
    fresh = study_preprocessing()(dict(tiny_datalist[0]))
    designed = phantom_lesion_mask(json.loads(open(tiny_datalist[0]["truth"]).read()), fresh["image"].affine.numpy(),
                                   fresh["image"].shape[1:])
    assert loaded["label"].shape == (1, *fresh["image"].shape[1:]) and designed.any()
    assert torch.equal(loaded["label"][0].bool(), torch.from_numpy(designed))
    assert torch.equal(loaded["label"].affine, loaded["image"].affine)
    # a study with a contour instead of a design: the contour, every second slice as the image
    ras_to_lps = np.diag([-1.0, -1.0, 1.0])
    affine = fresh["image"].affine.numpy()
    corner = ras_to_lps @ (affine[:3, :3] @ np.array([10.0, 10.0, 4.0]) + affine[:3, 3])
    square = np.array([corner + offset for offset in ([0, 0, 0], [20, 0, 0], [20, 20, 0], [0, 20, 0])])
    contour = write_rtstruct(tmp_path / "mask" / "rs.dcm", contours={"GTV": [square]})
    item = {key: value for key, value in tiny_datalist[0].items() if key != "truth"}
    with_contour = {**item, "lesion_mask": str(contour), "slice_step": 2}
    (cached,) = cache_studies([with_contour], tmp_path / "cache", progress=False)
    expected = rtstruct_mask(contour, fresh["image"].affine, fresh["image"].shape[1:])[..., ::2]
    label = LoadCachedStudyd()(cached)["label"][0].bool().numpy()
    assert expected.any() and np.array_equal(label, expected)
    (plain,) = cache_studies([item], tmp_path / "plain", progress=False)
    assert "label" not in LoadCachedStudyd()(plain)  # nothing known, nothing made up
