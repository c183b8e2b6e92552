"""A study streamed through the sinks gives the files its whole volumes give, or no files at all."""

from __future__ import annotations

import json
import logging
from datetime import datetime
from fnmatch import fnmatch
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image
from torch import nn

from pipeline.fusion import streaming as study_module
from pipeline.fusion.registry import available_fusers
from pipeline.fusion.selection import MODEL_METHOD, build_fusers
from pipeline.fusion.streaming import FusedSlab, StudySink, fuse_study, fused_filename
from pipeline.fusion.writers import MANIFEST_FILE, DicomSink, NiftiSink, PreviewSink, nifti_description
from pipeline.io.atomic import PARTIAL_PATTERN, temporary_sibling
from tests.io.conftest import left_by_a_killed_run
from pipeline.io.derived_series import FUSED_FILE, Provenance, dicom_folder_name, write_colour_series, write_fused_series
from pipeline.io.headers import read_dicom
from pipeline.provenance import BASELINE_VERSION, SOFTWARE_VERSION, weights_digest
from pipeline.transforms.windowing import WINDOW_PRESETS
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
    labels = [f"CT {WINDOWS[0]}", "PET on CT", *(f"{method} {window}" for window, method in volumes)]
    write_preview(tmp_path / "whole.png", ct, pet, list(volumes.values()), slices, labels=labels)
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


class _Snapshot(StudySink):
    """The folder's names while its volumes are half written: what a run killed then leaves."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.names = folder, []

    def add(self, slab: FusedSlab) -> None:
        if slab.start > 0 and not self.names:
            self.names = sorted(path.name for path in self.folder.iterdir())


def test_a_half_written_volume_is_not_named_as_one(streamed, tmp_path):
    """``rglob('*.nii.gz')``, a viewer or a folder watcher finds only finished volumes, whenever a run is killed."""
    study, result = streamed
    snapshot = _Snapshot(tmp_path)
    result.stream([NiftiSink(result, tmp_path), snapshot])
    assert len(snapshot.names) == len(result.names)
    assert [name for name in snapshot.names if not fnmatch(name, PARTIAL_PATTERN) or name.endswith(".nii.gz")] == []


def test_a_killed_runs_temporaries_are_removed_by_the_next_write_into_the_folder(streamed, tmp_path):
    """Every door (demo, fuse-batch, deploy app, bundle) writes a study's NIfTI through NiftiSink, so all sweep."""
    study, result = streamed
    leftovers = [temporary_sibling(tmp_path / fused_filename("lung", "average")),
                 temporary_sibling(tmp_path / MANIFEST_FILE),
                 tmp_path / ".0123456789ab.partial.fused_average_lung.nii.gz"]  # as earlier versions named them
    for path in leftovers:
        left_by_a_killed_run(path, b"\x1f\x8b")
    result.stream([NiftiSink(result, tmp_path)])
    assert [path.name for path in tmp_path.iterdir() if ".partial." in path.name] == []
    assert sorted(path.name for path in tmp_path.rglob("*.nii.gz")) == sorted(
        fused_filename(window, method) for window, method in result.names)


def test_every_volume_and_its_folder_record_what_made_them(streamed, tmp_path):
    study, result = streamed
    result.stream([NiftiSink(result, tmp_path)])
    for window, method in result.names:
        header = nib.load(tmp_path / fused_filename(window, method)).header
        assert header["descrip"].item().decode() == f"{SOFTWARE_VERSION} {method} {window} {BASELINE_VERSION}"
    record = json.loads((tmp_path / MANIFEST_FILE).read_text())
    assert datetime.fromisoformat(record.pop("created")).tzinfo is not None
    assert record == {"software_version": SOFTWARE_VERSION,
                      "methods": {"average": BASELINE_VERSION, "laplacian": BASELINE_VERSION},
                      "windows": WINDOWS, "suv_max": result.suv_max,
                      "written": [fused_filename(window, method) for window, method in result.names], "stale": []}


def test_volumes_an_earlier_run_wrote_are_kept_and_listed_as_stale(streamed, tmp_path, caplog):
    """``dcif demo OUT`` then ``dcif demo OUT --window lung``: the mediastinal volumes stay, named as not this run's."""
    study, result = streamed
    result.stream([NiftiSink(result, tmp_path)])
    # An earlier run's derived series (a deploy app's OUTPUT_DIR holds them beside the volumes), one of them of a
    # method and window this run writes again.
    for series in ("dicom_average_lung", "colour_average_lung", "dicom_laplacian_lung"):
        (tmp_path / series).mkdir()
        (tmp_path / series / FUSED_FILE).write_bytes(b"")
    again = fuse_study(study, build_fusers(["laplacian"]), ["lung"])
    with caplog.at_level(logging.WARNING, logger="pipeline.fusion.writers"):
        again.stream([NiftiSink(again, tmp_path)])
    record = json.loads((tmp_path / MANIFEST_FILE).read_text())
    stale = ["colour_average_lung", "dicom_average_lung", "fused_average_lung.nii.gz",
             "fused_average_mediastinal.nii.gz", "fused_laplacian_mediastinal.nii.gz"]
    assert record["written"] == ["fused_laplacian_lung.nii.gz"] and record["stale"] == stale
    assert record["methods"] == {"laplacian": BASELINE_VERSION} and record["windows"] == ["lung"]
    assert all((tmp_path / name).exists() for name in stale)
    (warning,) = [r.getMessage() for r in caplog.records if r.name == "pipeline.fusion.writers"]
    assert f"5 fused volume(s) or series an earlier run wrote are kept, listed as stale in {MANIFEST_FILE}" in warning


def test_the_longest_description_fits_the_nifti_header():
    """NIfTI's descrip holds 80 characters: a longer one would lose the end of the weights' digest."""
    digest = weights_digest(nn.Linear(2, 2))
    methods = [*available_fusers(), f"{MODEL_METHOD}_f_ct", f"{MODEL_METHOD}_f_pet"]
    assert max(len(nifti_description(method, window, digest)) for method in methods for window in WINDOW_PRESETS) <= 80
