"""KnownLesiond: the tumour a datalist knows, as the study's label on its fused grid."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

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
