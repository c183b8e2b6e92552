"""Body-weight SUV: decay handling, midnight, clock skew, units, overrides, missing and implausible headers."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from monai.data import MetaTensor

from pipeline.errors import InputError
from pipeline.io.dicom import load_series
from pipeline.transforms.suv import PETToSUV, PETToSUVd, decay_seconds, mean_count_time, suv_factor

HALF_LIFE = 6586.2
DOSE = 3.7e8
WEIGHT = 75.0


def _meta(**changes) -> dict[str, object]:
    meta = {
        "filename_or_obj": "/data/pet", "Units": "BQML", "DecayCorrection": "START", "PatientWeight": WEIGHT,
        "SeriesDate": "20240105", "SeriesTime": "100000", "AcquisitionDate": "20240105", "AcquisitionTime": "101500",
        "RadionuclideTotalDose": DOSE, "RadionuclideHalfLife": HALF_LIFE, "RadiopharmaceuticalStartTime": "090000",
    }
    meta.update(changes)
    return {k: v for k, v in meta.items() if v is not None}


def _expected(seconds: float, weight: float = WEIGHT, dose: float = DOSE) -> float:
    return weight * 1000.0 / (dose * math.exp(-math.log(2.0) * seconds / HALF_LIFE))


def test_start_decays_dose_to_series_start():
    assert suv_factor(_meta()) == pytest.approx(_expected(3600.0), rel=1e-12)


def test_admin_uses_undecayed_dose():
    assert suv_factor(_meta(DecayCorrection="ADMIN")) == pytest.approx(_expected(0.0), rel=1e-12)


def test_none_decays_each_slice_to_its_own_acquisition():
    slices = [{"AcquisitionTime": "101500", "ActualFrameDuration": 0.0},
              {"AcquisitionTime": "103000", "ActualFrameDuration": 120000.0}]
    factors = suv_factor(_meta(DecayCorrection="NONE", pet_slices=slices))
    assert factors[0] == pytest.approx(_expected(4500.0), rel=1e-12)
    assert factors[1] == pytest.approx(_expected(5400.0 + mean_count_time(120.0, HALF_LIFE)), rel=1e-12)
    assert 59.0 < mean_count_time(120.0, HALF_LIFE) < 60.0  # just under the middle of the frame


def test_start_with_series_time_after_acquisition_uses_the_first_acquisition(caplog):
    slices = [{"AcquisitionTime": "093000", "FrameReferenceTime": 60000.0, "ActualFrameDuration": 120000.0}]
    with caplog.at_level(logging.WARNING, logger="pipeline.transforms.suv"):
        factor = suv_factor(_meta(SeriesTime="110000", pet_slices=slices))
    assert factor[0] == pytest.approx(_expected(1800.0 - 60.0 + mean_count_time(120.0, HALF_LIFE)), rel=1e-12)
    assert "SeriesTime is later" in caplog.text


def test_private_decay_datetime_wins():
    meta = _meta(SeriesTime="110000", GEDecayDateTime="20240105093000")
    assert suv_factor(meta)[0] == pytest.approx(_expected(1800.0), rel=1e-12)


def test_dose_in_mbq_is_recognised():
    assert suv_factor(_meta(RadionuclideTotalDose=DOSE / 1e6))[0] == pytest.approx(_expected(3600.0), rel=1e-12)


@pytest.mark.parametrize("key", ["PhilipsSUVScale", "PhilipsActivityScale"])
def test_philips_counts(key):
    per_slice = [{key: 0.5}, {key: 0.25}]
    factors = suv_factor(_meta(Units="CNTS", pet_slices=per_slice))
    to_suv = 1.0 if key == "PhilipsSUVScale" else _expected(3600.0)
    assert factors.tolist() == pytest.approx([0.5 * to_suv, 0.25 * to_suv], rel=1e-12)


def test_suv_of_another_type_is_renormalised_to_body_weight():
    meta = _meta(Units="GML", SUVType="LBMJAMES128", PatientSex="M", PatientSize=1.75)
    assert suv_factor(meta)[0] == pytest.approx(WEIGHT / (1.10 * WEIGHT - 128 * (WEIGHT / 175) ** 2), rel=1e-12)
    with pytest.raises(InputError, match="lacks PatientSex, needed for SUV type LBMJAMES128"):
        suv_factor(_meta(Units="GML", SUVType="LBMJAMES128", PatientSize=1.75))


def test_injection_before_midnight_times_only():
    meta = _meta(SeriesDate=None, SeriesTime="003000", RadiopharmaceuticalStartTime="233000")
    assert suv_factor(meta) == pytest.approx(_expected(3600.0), rel=1e-12)


def test_injection_before_midnight_with_datetimes():
    meta = _meta(SeriesDate="20240106", SeriesTime="003000", AcquisitionDate="20240106", AcquisitionTime="003000",
                 RadiopharmaceuticalStartDateTime="20240105233000")
    assert suv_factor(meta) == pytest.approx(_expected(3600.0), rel=1e-12)


def test_inconsistent_deidentified_dates_fall_back_to_times():
    # As in the shared TCIA data: the start DateTime was shifted a day later than the series date.
    meta = _meta(RadiopharmaceuticalStartDateTime="20240106090000")
    assert suv_factor(meta) == pytest.approx(_expected(3600.0), rel=1e-12)


def test_long_lived_tracer_imaged_days_later_decays_over_the_dated_interval():
    zr89 = 78.41 * 3600.0  # Zr-89 antibodies are imaged 1 to 7 days after injection
    meta = _meta(RadionuclideHalfLife=zr89, RadiopharmaceuticalStartDateTime="20240102090000")
    seconds = 3 * 86400.0 + 3600.0
    assert suv_factor(meta)[0] == pytest.approx(WEIGHT * 1000.0 / (DOSE * 0.5 ** (seconds / zr89)), rel=1e-12)


def test_a_dated_interval_of_many_half_lives_falls_back_to_times():
    """Three days is 40 FDG half-lives (an activity of 1e-12): a date error, not an interval."""
    meta = _meta(RadiopharmaceuticalStartDateTime="20240102090000")
    assert suv_factor(meta) == pytest.approx(_expected(3600.0), rel=1e-12)


@pytest.mark.parametrize("dated", [True, False])
def test_an_injection_logged_seconds_after_the_reference_is_clock_skew_not_a_day_of_decay(dated, caplog):
    """A dynamic scan started at injection, the clocks 30 s apart: not 23 h 59 min 30 s of decay (SUV x8800)."""
    dates = {"RadiopharmaceuticalStartDateTime": "20240105110030"} if dated else {"SeriesDate": None,
                                                                                  "AcquisitionDate": None}
    meta = _meta(SeriesTime="110000", AcquisitionTime="110000", RadiopharmaceuticalStartTime="110030", **dates)
    with caplog.at_level(logging.WARNING, logger="pipeline.transforms.suv"):
        assert suv_factor(meta) == pytest.approx(_expected(0.0), rel=1e-12)
    assert ("/data/pet: injection at 11:00:30 is 0.5 min after the decay reference time 11:00:00: "
            "taken as clock skew") in caplog.text


@pytest.mark.parametrize("dates", [{"RadiopharmaceuticalStartDateTime": "20240105120000"},
                                   {"SeriesDate": None, "AcquisitionDate": None}])
def test_an_injection_an_hour_after_the_reference_is_refused(dates):
    """On one date, or undated with 23 h (12.6 F-18 half-lives) as the only other reading: a wrong time."""
    meta = _meta(SeriesTime="110000", AcquisitionTime="110000", RadiopharmaceuticalStartTime="120000", **dates)
    with pytest.raises(InputError) as info:
        suv_factor(meta)
    assert str(info.value) == ("/data/pet: injection at 12:00:00 is 60.0 min after the decay reference time 11:00:00, "
                               "more than clock skew: a header time is wrong")


def test_clock_skew_across_midnight_is_not_a_day_of_decay(caplog):
    """An injector clock 5 min ahead of the scanner's at a 23:58 scan: 00:03 is skew, not 23 h 55 min (SUV x5900)."""
    meta = _meta(SeriesDate=None, AcquisitionDate=None, SeriesTime="235800", AcquisitionTime="235800",
                 RadiopharmaceuticalStartTime="000300")
    with caplog.at_level(logging.WARNING, logger="pipeline.transforms.suv"):
        assert suv_factor(meta) == pytest.approx(_expected(0.0), rel=1e-12)
    assert "injection at 00:03:00 is 5.0 min after the decay reference time 23:58:00: taken as clock skew" in caplog.text


def test_an_injection_dated_past_midnight_after_a_scan_before_it_is_refused():
    """22 min after a 23:58 reference, on the next date: neither skew nor the day before (23.6 h of F-18)."""
    meta = _meta(SeriesTime="235800", AcquisitionTime="235800", RadiopharmaceuticalStartTime="002000",
                 RadiopharmaceuticalStartDateTime="20240106002000")
    with pytest.raises(InputError) as info:
        suv_factor(meta)
    assert str(info.value) == ("/data/pet: injection at 00:20:00 is 23.6 h before the decay reference time 23:58:00, "
                               "more than 10 half-lives: a header time is wrong")


def test_an_injection_date_filled_in_from_the_scan_past_midnight_is_the_day_before():
    """Injected at 23:30, scanned at 00:30 the next day, the injection's date written as the scan's: 1 h of decay."""
    meta = _meta(SeriesDate="20240106", AcquisitionDate="20240106", SeriesTime="003000", AcquisitionTime="003000",
                 RadiopharmaceuticalStartTime="233000", RadiopharmaceuticalStartDateTime="20240106233000")
    assert suv_factor(meta) == pytest.approx(_expected(3600.0), rel=1e-12)


def test_an_undated_long_lived_injection_after_the_reference_time_is_the_day_before():
    zr89 = 78.41 * 3600.0  # 23 h is 0.3 half-lives: the injection the day before is plausible
    meta = _meta(SeriesDate=None, AcquisitionDate=None, RadionuclideHalfLife=zr89,
                 RadiopharmaceuticalStartTime="110000")
    assert suv_factor(meta)[0] == pytest.approx(WEIGHT * 1000.0 / (DOSE * 0.5 ** (23 * 3600.0 / zr89)), rel=1e-12)


def test_undated_acquisitions_past_midnight_follow_the_series_time():
    """Beds at 23:58 and 00:03 of a 23:58 series: SeriesTime is the reference, not the 00:03 bed (5 min more decay)."""
    slices = [{"AcquisitionTime": "235800"}, {"AcquisitionTime": "000300"}]
    meta = _meta(SeriesDate=None, AcquisitionDate=None, SeriesTime="235800", RadiopharmaceuticalStartTime="225800",
                 pet_slices=slices)
    assert suv_factor(meta) == pytest.approx(_expected(3600.0), rel=1e-12)


def test_an_undated_series_time_rewritten_past_midnight_still_follows_its_acquisition(caplog):
    meta = _meta(SeriesDate=None, AcquisitionDate=None, SeriesTime="001000", RadiopharmaceuticalStartTime="225000",
                 pet_slices=[{"AcquisitionTime": "235000"}])
    with caplog.at_level(logging.WARNING, logger="pipeline.transforms.suv"):
        assert suv_factor(meta) == pytest.approx(_expected(3600.0), rel=1e-12)
    assert "SeriesTime is later than the first acquisition" in caplog.text


@pytest.mark.parametrize("tag", ["PatientWeight", "RadionuclideTotalDose"])
@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_a_weight_or_dose_that_is_not_a_finite_number_is_refused_naming_it(tag, value):
    """Valid DS strings that pass a ``<= 0`` check and make every SUV NaN (or 0)."""
    unit = "kg" if tag == "PatientWeight" else "Bq"
    with pytest.raises(InputError) as info:
        suv_factor(_meta(**{tag: value}))
    assert str(info.value) == f"/data/pet: {tag} {float(value)} {unit} must be a positive number for SUV"


def test_a_weight_in_grams_is_recognised(caplog):
    with caplog.at_level(logging.WARNING, logger="pipeline.transforms.suv"):
        assert suv_factor(_meta(PatientWeight=70000.0)) == pytest.approx(_expected(3600.0, weight=70.0), rel=1e-12)
    assert "/data/pet: PatientWeight 70000 read as grams" in caplog.text


@pytest.mark.parametrize("weight", [0.5, 700.0])
def test_a_weight_no_patient_has_is_refused(weight):
    with pytest.raises(InputError) as info:
        suv_factor(_meta(PatientWeight=weight))
    assert str(info.value) == f"/data/pet: PatientWeight {weight:g} kg is not a patient's weight (1-500 kg)"


def test_a_weight_given_is_checked_as_the_header_is_but_always_in_kg():
    with pytest.raises(InputError, match="/data/pet: weight given nan kg must be a positive number"):
        suv_factor(_meta(), weight_kg=float("nan"))
    with pytest.raises(InputError, match="/data/pet: weight given 70000 kg is not a patient's weight"):
        suv_factor(_meta(), weight_kg=70000.0)


def test_a_dicom_scan_past_midnight_without_dates(tiny_phantom_root: Path, tmp_path: Path):
    """The loader's AcquisitionTime and SUV's decay reference order undated times around SeriesTime alike."""
    files = sorted((tiny_phantom_root / "seed_000" / "dicom" / "PET").glob("*.dcm"))
    for index, path in enumerate(files):
        ds = pydicom.dcmread(path)
        for keyword in ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate"):
            ds.pop(keyword, None)
        item = ds.RadiopharmaceuticalInformationSequence[0]
        item.pop("RadiopharmaceuticalStartDateTime", None)
        item.RadiopharmaceuticalStartTime, ds.SeriesTime = "225800", "235800"
        ds.AcquisitionTime = "000300" if index % 2 else "235800"
        ds.save_as(tmp_path / path.name)
    pet = load_series(tmp_path)
    assert pet.meta["AcquisitionTime"] == "235800"
    assert decay_seconds(pet.meta).tolist() == [3600.0]


@pytest.mark.parametrize("field", ["SeriesTime", "RadiopharmaceuticalStartDateTime", "GEDecayDateTime"])
def test_a_malformed_time_is_one_line_naming_the_value(field):
    with pytest.raises(InputError, match=r"/data/pet: unreadable date or time in the PET header: .*nine o'clock"):
        suv_factor(_meta(**{field: "nine o'clock"}))


def test_manual_weight_and_dose_override_headers():
    meta = _meta(PatientWeight=None, RadionuclideTotalDose=None)
    assert suv_factor(meta, weight_kg=80.0, dose_bq=2e8) == pytest.approx(_expected(3600.0, 80.0, 2e8), rel=1e-12)
    assert suv_factor(_meta(), weight_kg=80.0) == pytest.approx(_expected(3600.0, weight=80.0), rel=1e-12)


@pytest.mark.parametrize("units", ["GML", "SUVbw", "SUV", "suv"])
def test_already_suv_is_unchanged(units):
    assert suv_factor({"Units": units}) == [1.0]


def test_a_weight_given_corrects_suv_the_scanner_normalised_by_the_headers():
    # The scanner divided by 50 kg where the patient weighs 100: every SUV is half what it should be.
    assert suv_factor(_meta(Units="GML", PatientWeight=50.0), weight_kg=100.0)[0] == pytest.approx(2.0, rel=1e-12)
    meta = _meta(Units="GML", SUVType="LBMJAMES128", PatientSex="M", PatientSize=1.75, PatientWeight=50.0)
    lbm = {w: 1.10 * w - 128 * (w / 175) ** 2 for w in (50.0, 100.0)}
    assert suv_factor(meta, weight_kg=100.0)[0] == pytest.approx(100.0 / lbm[50.0], rel=1e-12)  # BW(100) / LBM(50)


def test_units_hint_for_nifti():
    assert suv_factor({"filename_or_obj": "pet.nii.gz"}, units="GML") == [1.0]
    with pytest.raises(InputError, match=r"pet\.nii\.gz: PET header lacks Units"):
        suv_factor({"filename_or_obj": "pet.nii.gz"})


def test_unsupported_units():
    with pytest.raises(InputError, match="Units CNTS cannot be converted to SUV"):
        suv_factor(_meta(Units="CNTS"))


@pytest.mark.parametrize("tag", ["PatientWeight", "RadionuclideTotalDose", "RadionuclideHalfLife",
                                 "RadiopharmaceuticalStartTime", "SeriesTime", "DecayCorrection"])
def test_missing_header_names_tag_and_series(tag):
    with pytest.raises(InputError) as info:
        suv_factor(_meta(**{tag: None}))
    assert str(info.value) == f"/data/pet: PET header lacks {tag}, needed for SUV"


def test_transform_scales_values_and_marks_units():
    pet = MetaTensor(torch.full((1, 2, 2, 2), 1000.0), affine=torch.eye(4), meta=_meta())
    suv = PETToSUV()(pet)
    assert torch.allclose(suv, torch.full_like(suv, 1000.0 * _expected(3600.0)))
    assert suv.meta["Units"] == "SUVbw" and pet.meta["Units"] == "BQML"  # input meta untouched
    assert torch.equal(PETToSUV()(suv), suv)  # idempotent


def test_dictionary_twin():
    pet = MetaTensor(torch.ones((1, 2, 2, 2)), affine=torch.eye(4), meta=_meta(Units="GML"))
    out = PETToSUVd(keys="pet")({"pet": pet, "ct": "untouched"})
    assert out["pet"].meta["Units"] == "SUVbw" and out["ct"] == "untouched"
    assert torch.equal(out["pet"], pet)


def test_pet_without_absolute_units_is_scaled_relatively_and_warns(caplog):
    values = torch.arange(1000, dtype=torch.float32).reshape(1, 10, 10, 10)
    pet = MetaTensor(values, affine=torch.eye(4), meta=_meta(Units="PROPCNTS", RadionuclideTotalDose=None))
    with caplog.at_level(logging.WARNING, logger="pipeline.transforms.suv"):
        out = PETToSUV()(pet, name="abc123")
    body = values[values > 0.1 * 999]
    assert float(out.max()) == pytest.approx(5.0 * 999 / float(np.percentile(body.numpy(), 99.0)), rel=1e-5)
    assert out.meta["Units"] == "relative" and out.meta["pet_scaling"].startswith("relative: body p99")
    (record,) = caplog.records
    assert record.getMessage().startswith("study abc123: PET has no absolute units (PET Units PROPCNTS")
    assert "\n" not in record.getMessage()
    forced = PETToSUV(factor=0.01)(pet)
    assert torch.allclose(forced, values * 0.01) and forced.meta["Units"] == "SUVbw"
    assert "given by hand" in forced.meta["pet_scaling"]
