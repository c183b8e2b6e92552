"""A PET shorter than the CT, or shifted along z: the uncovered CT slices are counted, blank and not scored."""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from pipeline.batch import run_batch
from pipeline.batch.report import OK
from pipeline.io.discovery import discover_studies

from .conftest import tiny_study


def _short_pet(root: Path, tiny_geometry: dict) -> Path:
    dicom = tiny_study(root / "short", 21, tiny_geometry)
    for path in sorted((dicom / "PET").iterdir())[:12]:  # the lowest 12 of 4 mm slices: the feet-end CT slices
        path.unlink()
    return dicom


def _shifted_pet(root: Path, tiny_geometry: dict) -> Path:
    dicom = tiny_study(root / "shifted", 22, tiny_geometry)
    for path in (dicom / "PET").iterdir():
        ds = pydicom.dcmread(path)
        ds.ImagePositionPatient[2] = float(ds.ImagePositionPatient[2]) + 40.0
        ds.save_as(path)
    return dicom


@pytest.fixture(scope="module")
def partial_export(tmp_path_factory: pytest.TempPathFactory, tiny_geometry: dict) -> Path:
    root = tmp_path_factory.mktemp("partial_pet")
    _short_pet(root, tiny_geometry)
    _shifted_pet(root, tiny_geometry)
    return root


def test_discovery_counts_ct_slices_without_pet(partial_export: Path):
    pairs = discover_studies(partial_export).pairs
    assert len(pairs) == 2
    for pair in pairs:
        assert 0 < pair.ct_slices_without_pet < pair.ct.n_slices
        assert f"{pair.ct_slices_without_pet} CT slices without PET" in str(pair)


def test_uncovered_slices_are_reported_blank_and_unscored(partial_export: Path, tmp_path: Path, batch_options,
                                                          caplog):
    expected = {pair.study_key: pair.ct_slices_without_pet for pair in discover_studies(partial_export).pairs}
    with caplog.at_level(logging.WARNING, logger="pipeline.transforms.resample"):
        report = run_batch(partial_export, tmp_path / "out", batch_options, progress=False)
    assert {r.key: r.ct_slices_without_pet for r in report.studies} == expected
    for result in report.studies:
        assert result.status == OK and result.pet_scaling == "SUVbw"
        assert f"study {result.key}: {expected[result.key]} of" in caplog.text
        (fused_file,) = (tmp_path / "out" / result.key).glob("fused_*.nii.gz")
        fused = np.asarray(nib.load(fused_file).dataobj)
        blank = np.flatnonzero(fused.reshape(-1, fused.shape[-1]).max(axis=0) == 0)
        assert blank.size == expected[result.key]
    header = (tmp_path / "out" / "report.csv").read_text().splitlines()[0].split(",")
    assert {"ct_slices_without_pet", "pet_scaling"} <= set(header)
