"""A study streamed through the sinks gives the files its whole volumes give, or no files at all."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from pipeline.fusion import streaming as study_module
from pipeline.fusion.selection import build_fusers
from pipeline.fusion.streaming import FusedSlab, StudySink, fuse_study
from pipeline.fusion.writers import DicomSink, NiftiSink, PreviewSink
from pipeline.io.derived_series import Provenance, dicom_folder_name, write_colour_series, write_fused_series
from pipeline.io.headers import read_dicom
from pipeline.provenance import BASELINE_VERSION
from pipeline.transforms.data_path import study_preprocessing
from pipeline.transforms.slicing import flagged_slices
from pipeline.visualization.colour import colour_fusion
from pipeline.visualization.preview import preview_slices, write_preview

WINDOWS = ["lung", "mediastinal"]


@pytest.fixture
def streamed(tiny_datalist, monkeypatch):
    monkeypatch.setattr(study_module, "SLAB_VOXELS", 5 * 64 * 64 * 4)  # 4 channels: slabs of 5, the last short
    study = tiny_datalist[0]
    return study, fuse_study(study, build_fusers(["average", "laplacian"]), WINDOWS)


def _headers(study: dict) -> list[list[pydicom.Dataset]]:
    return [[read_dicom(path) for path in study[key].files] for key in ("ct", "pet")]


def test_dicom_series_and_preview_equal_those_of_the_whole_volumes(streamed, whole_volume_fusion, tmp_path):
    study, result = streamed
    headers = _headers(study)
    result.stream([DicomSink(result, tmp_path / "slabs"), PreviewSink(result, tmp_path / "slabs.png")])

    volumes = whole_volume_fusion(study, build_fusers(["average", "laplacian"]), WINDOWS)
    pet = study_preprocessing(WINDOWS)(dict(study))["image"][-1:]
    for (window, method), volume in volumes.items():
        provenance = Provenance(method, window, BASELINE_VERSION, result.suv_max)
        whole = write_fused_series(volume, *headers, tmp_path / "whole" / dicom_folder_name(method, window),
                                   provenance)
        colour = write_colour_series(colour_fusion(volume, pet), *headers, tmp_path / "whole" / "colour", provenance)
        folder = tmp_path / "slabs" / dicom_folder_name(method, window)
        assert pydicom.dcmread(folder / "fused.dcm").PixelData == pydicom.dcmread(whole).PixelData
        streamed_colour = folder.parent / f"colour_{method}_{window}" / "fused.dcm"
        assert pydicom.dcmread(streamed_colour).PixelData == pydicom.dcmread(colour).PixelData
    slices = preview_slices(pet, flagged_slices(result.data["body_slices"]))
    ct = study_preprocessing(WINDOWS)(dict(study))["image"][:1]
    write_preview(tmp_path / "whole.png", ct, pet, list(volumes.values()), slices)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "slabs.png")), np.asarray(Image.open(tmp_path / "whole.png")))


class _FailingSink(StudySink):
    def add(self, slab: FusedSlab) -> None:
        if slab.start > 0:
            raise RuntimeError("disk full half-way")


def test_a_stream_that_fails_half_way_leaves_no_file(streamed, tmp_path):
    study, result = streamed
    sinks = [NiftiSink(result, tmp_path), DicomSink(result, tmp_path), _FailingSink()]
    with pytest.raises(RuntimeError, match="half-way"):
        result.stream(sinks)
    assert [path for path in tmp_path.rglob("*") if path.is_file()] == []
