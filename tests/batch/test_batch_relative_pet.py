"""PET without absolute units (counts, no dose) still fuses, with a relative scaling the report and terminal name."""

from __future__ import annotations

import logging
from pathlib import Path

import pydicom
import pytest

from pipeline.batch import run_batch
from pipeline.batch.report import OK

from .conftest import tiny_study


def test_counts_pet_fuses_with_relative_scaling(tmp_path: Path, tiny_geometry: dict, batch_options, caplog):
    dicom = tiny_study(tmp_path / "in" / "counts", 31, tiny_geometry)
    for path in (dicom / "PET").iterdir():
        ds = pydicom.dcmread(path)
        ds.Units = "CNTS"
        del ds.RadiopharmaceuticalInformationSequence[0].RadionuclideTotalDose
        ds.save_as(path)
    with caplog.at_level(logging.WARNING, logger="pipeline.transforms.suv"):
        report = run_batch(tmp_path / "in", tmp_path / "out", batch_options, progress=False)
    (result,) = report.studies
    assert result.status == OK and result.pet_scaling.startswith("relative: body p99")
    assert f"study {result.key}: PET has no absolute units (PET Units CNTS" in caplog.text
    assert "relative: body p99" in (tmp_path / "out" / "report.csv").read_text()


def test_a_factor_given_by_hand_replaces_the_relative_scaling(tmp_path: Path, tiny_geometry: dict, batch_options):
    from dataclasses import replace

    from pipeline.errors import InputError

    dicom = tiny_study(tmp_path / "in" / "counts", 32, tiny_geometry)
    for path in (dicom / "PET").iterdir():
        ds = pydicom.dcmread(path)
        ds.Units = "CNTS"
        ds.save_as(path)
    report = run_batch(tmp_path / "in", tmp_path / "out", replace(batch_options, pet_factor=1e-3), progress=False)
    (result,) = report.studies
    assert result.status == OK and result.pet_scaling == "SUVbw (factor 0.001 given by hand)"
    # Another factor, other pixels: other UIDs, or a PACS would keep the first images as "already stored".
    run_batch(tmp_path / "in", tmp_path / "other", replace(batch_options, pet_factor=2e-3), progress=False)
    first, other = (pydicom.dcmread(next((tmp_path / out / result.key).glob("dicom_*/fused.dcm")),
                                    stop_before_pixels=True) for out in ("out", "other"))
    assert first.SeriesInstanceUID != other.SeriesInstanceUID and "factor 0.001" in first.DerivationDescription
    with pytest.raises(InputError, match="--pet-factor must be a positive number"):
        run_batch(tmp_path / "in", tmp_path / "out2", replace(batch_options, pet_factor=-1.0), progress=False)
