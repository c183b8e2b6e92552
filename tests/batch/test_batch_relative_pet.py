"""PET without absolute units (counts, no dose) still fuses, with a relative scaling the report and terminal name."""

from __future__ import annotations

import logging
from pathlib import Path

import pydicom

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
