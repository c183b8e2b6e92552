"""Tiny phantom DICOM exports for the batch tests, made once per session (read-only for the tests).

``good_export``: three fusable studies. ``mixed_export``: the same plus four broken studies, one
per failure a PACS export really shows: a truncated file, no PET, PET and CT in different frames of
reference, corrupt pixel data. ``reference_run``: the in-process batch of ``good_export`` that
other runs (resumed, repeated, parallel, on Ray) must reproduce byte for byte.
"""

from __future__ import annotations

import io
import shutil
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest

from pipeline.batch import BatchOptions, run_batch
from pipeline.phantom import make_phantom
from pipeline.transforms.data_path import DEFAULT_WINDOWS

N_GOOD = 3
# One window keeps the tests fast; two windows and two methods run in the job test.
TEST_OPTIONS = BatchOptions(methods=("laplacian",), windows=DEFAULT_WINDOWS[:1], metric_slices=4)


def tiny_study(folder: Path, seed: int, tiny_geometry: dict) -> Path:
    """A tiny phantom study's DICOM folder (``CT/`` and ``PET/``), without the phantom's other files."""
    make_phantom(folder / "phantom", ct_shape=tiny_geometry["size"], ct_spacing=tiny_geometry["spacing"],
                 seed=seed, write_nifti=False)
    shutil.move(folder / "phantom" / "dicom", folder / "dicom")
    shutil.rmtree(folder / "phantom")
    return folder / "dicom"


def _rewrite(files: list[Path], **tags: object) -> None:
    """Set header ``tags`` in every file (as a PACS with different settings might have written it)."""
    for path in files:
        ds = pydicom.dcmread(path)
        for keyword, value in tags.items():
            setattr(ds, keyword, value)
        ds.save_as(path)


def _break_studies(root: Path, tiny_geometry: dict) -> dict[str, Path]:
    """Four broken studies under ``root``, by the failure they show."""
    broken = {name: tiny_study(root / name, seed, tiny_geometry)
              for seed, name in enumerate(("truncated", "no_pet", "other_frame", "corrupt_pixels"), start=10)}
    truncated = sorted((broken["truncated"] / "CT").iterdir())[5]
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size * 2 // 3])
    shutil.rmtree(broken["no_pet"] / "PET")
    _rewrite(sorted((broken["other_frame"] / "PET").iterdir()), FrameOfReferenceUID=pydicom.uid.generate_uid())
    corrupt = sorted((broken["corrupt_pixels"] / "CT").iterdir())[7]
    ds = pydicom.dcmread(corrupt)
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
    ds.save_as(corrupt)
    return broken


@pytest.fixture(scope="session")
def good_export(tmp_path_factory: pytest.TempPathFactory, tiny_geometry: dict) -> Path:
    root = tmp_path_factory.mktemp("good_export")
    for seed in range(N_GOOD):
        tiny_study(root / f"patient_{seed}", seed, tiny_geometry)
    return root


@pytest.fixture(scope="session")
def mixed_export(tmp_path_factory: pytest.TempPathFactory, good_export: Path, tiny_geometry: dict) -> Path:
    root = tmp_path_factory.mktemp("mixed_export") / "export"
    shutil.copytree(good_export, root)
    _break_studies(root, tiny_geometry)
    return root


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory: pytest.TempPathFactory, good_export: Path) -> Path:
    out = tmp_path_factory.mktemp("reference_run")
    run_batch(good_export, out, TEST_OPTIONS, progress=False)
    return out


@pytest.fixture(scope="session")
def fused_files() -> Callable[[Path], dict[str, bytes]]:
    """Bytes of every fused output (NIfTI, DICOM, preview) under an OUT folder, by relative path.

    DICOM objects without their fusion dates and times: those are the clock's, everything else is reproducible.
    """

    def content(path: Path) -> bytes:
        if path.suffix != ".dcm":
            return path.read_bytes()
        ds = pydicom.dcmread(path)
        for keyword in ("SeriesDate", "SeriesTime", "ContentDate", "ContentTime", "InstanceCreationDate",
                        "InstanceCreationTime"):
            delattr(ds, keyword)
        buffer = io.BytesIO()
        ds.save_as(buffer)
        return buffer.getvalue()

    def read(out: Path) -> dict[str, bytes]:
        return {str(path.relative_to(out)): content(path) for path in sorted(out.rglob("*"))
                if path.suffix in (".gz", ".dcm", ".png")}

    return read


@pytest.fixture(scope="session")
def batch_options() -> BatchOptions:
    """The fast options every batch test runs with (laplacian, lung window, 4 scored slices)."""
    return TEST_OPTIONS


@pytest.fixture(scope="session")
def rewrite_tags() -> Callable[..., None]:
    """``rewrite_tags(files, Keyword=value, ...)``: edit DICOM headers in place."""
    return _rewrite
