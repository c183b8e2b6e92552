"""CT windows and SUV scaling: exactly clip((x - (L - W/2)) / W, 0, 1)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from pipeline.errors import InputError
from pipeline.transforms.windowing import CTWindow, CTWindowd, SUVScale, SUVScaled

HU = torch.tensor([-2000.0, -1350.0, -1000.0, -600.0, -135.0, 0.0, 40.0, 215.0, 3000.0]).reshape(1, 3, 3, 1)


def _formula(hu: np.ndarray, width: float, level: float) -> np.ndarray:
    return np.clip((hu - (level - width / 2)) / width, 0.0, 1.0)


@pytest.mark.parametrize("window, width, level", [("lung", 1500, -600), ("mediastinal", 350, 40), ((400, 50), 400, 50)])
def test_window_formula(window, width, level):
    out = CTWindow(window)(HU)
    np.testing.assert_allclose(out.numpy(), _formula(HU.numpy().astype(np.float64), width, level), atol=1e-7)
    assert out.dtype == torch.float32


def test_lung_window_landmarks():
    out = CTWindow("lung")(HU).flatten().tolist()
    # -1350 is the window floor, -600 its level, 150 its ceiling
    assert out[1] == 0.0 and out[3] == 0.5 and out[0] == 0.0 and out[-1] == 1.0
    assert out[2] == pytest.approx(350 / 1500, abs=1e-7)


def test_mediastinal_window_landmarks():
    out = CTWindow("mediastinal")(HU).flatten().tolist()
    assert out[4] == 0.0 and out[6] == 0.5 and out[7] == 1.0 and out[5] == pytest.approx(135 / 350, abs=1e-7)


def test_input_is_not_modified_and_meta_kept():
    ct = MetaTensor(HU.clone(), meta={"modality": "CT"})
    out = CTWindow("lung")(ct)
    assert torch.equal(ct, HU) and isinstance(out, MetaTensor) and out.meta["modality"] == "CT"


def test_bad_window_names():
    with pytest.raises(ValueError, match="unknown CT window"):
        CTWindow("bone-ish")


def test_dictionary_twin_with_output_key():
    data = {"ct": HU.clone()}
    out = CTWindowd("ct", "mediastinal", output_key="ct_mediastinal")(data)
    assert torch.equal(out["ct"], HU)
    assert torch.equal(out["ct_mediastinal"], CTWindow("mediastinal")(HU))
    with pytest.raises(ValueError, match="exactly one input key"):
        CTWindowd(["ct", "ct2"], output_key="x")


def test_suv_scale():
    suv = MetaTensor(torch.tensor([-1.0, 0.0, 1.5, 15.0, 40.0]).reshape(1, 5, 1, 1), meta={"Units": "SUVbw"})
    assert SUVScale()(suv).flatten().tolist() == pytest.approx([0.0, 0.0, 0.1, 1.0, 1.0])
    assert SUVScale(suv_max=3.0)(suv).flatten().tolist() == pytest.approx([0.0, 0.0, 0.5, 1.0, 1.0])
    out = SUVScaled(keys="pet", suv_max=3.0, output_key="pet_scaled")({"pet": suv})
    assert out["pet_scaled"].flatten().tolist() == pytest.approx([0.0, 0.0, 0.5, 1.0, 1.0])


def test_suv_scale_refuses_activity_concentration():
    pet = MetaTensor(torch.ones((1, 2, 2, 2)), meta={"Units": "BQML", "filename_or_obj": "/data/pet"})
    with pytest.raises(InputError, match="^/data/pet: PET is in BQML, not SUV"):
        SUVScale()(pet)
