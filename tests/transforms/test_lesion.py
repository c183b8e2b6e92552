"""KnownLesiond: the tumour a datalist knows, as the study's label on its fused grid."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from pipeline.errors import InputError
from pipeline.metrics import phantom_lesion_mask
from pipeline.transforms.data_path import study_preprocessing
from pipeline.transforms.lesion import KnownLesiond


def test_a_phantoms_truth_becomes_its_label_and_a_study_without_one_has_none(tiny_datalist):
    study = study_preprocessing(["lung"])(dict(tiny_datalist[0]))
    labelled = KnownLesiond()(study)
    truth = json.loads(Path(tiny_datalist[0]["truth"]).read_text())
    expected = phantom_lesion_mask(truth, study["image"].affine, study["image"].shape[1:])
    assert labelled["label"].shape == (1, *study["image"].shape[1:]) and expected.any()
    assert np.array_equal(labelled["label"][0].numpy() > 0.5, expected)
    assert np.allclose(labelled["label"].affine, study["image"].affine)
    unknown = {key: value for key, value in study.items() if key not in ("truth", "label")}
    assert "label" not in KnownLesiond()(unknown)


def test_a_bad_truth_file_is_named(tmp_path):
    truth_path = tmp_path / "truth.json"
    truth_path.write_text(json.dumps({"tumour": {"radius_mm": 5.0}}))
    image = MetaTensor(torch.zeros(2, 16, 16, 8), affine=torch.diag(torch.tensor([-2.0, -2.0, 3.0, 1.0])))
    with pytest.raises(InputError, match="truth.json: phantom truth file has no tumour centre_lps_mm"):
        KnownLesiond()({"image": image, "truth": str(truth_path)})
