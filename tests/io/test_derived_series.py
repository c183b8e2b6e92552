"""The fused volume as a derived DICOM series: valid objects on the CT's grid, in its study, reproducible."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import torch
from monai.data import MetaTensor

from pipeline.errors import InputError
from pipeline.io.derived_series import write_fused_series
from pipeline.io.dicom import load_series
from pipeline.io.discovery import read_dicom
from pipeline.phantom import make_phantom


@pytest.fixture(scope="module")
def ct_series(tmp_path_factory: pytest.TempPathFactory, tiny_geometry: dict) -> Path:
    root = tmp_path_factory.mktemp("derived_series_phantom")
    return make_phantom(root, ct_shape=tiny_geometry["size"], ct_spacing=tiny_geometry["spacing"], seed=3,
                        write_nifti=False).ct_dir


@pytest.fixture(scope="module")
def fused(ct_series: Path) -> MetaTensor:
    """A stand-in fused volume on the CT grid: a ramp along every axis, so a swapped axis shows."""
    ct = load_series(ct_series)
    x, y, z = (torch.linspace(0, 1, n) for n in ct.shape[1:])
    ramp = (0.5 * x[:, None, None] + 0.3 * y[None, :, None] + 0.2 * z[None, None, :])[None]
    return MetaTensor(ramp, affine=ct.affine, meta={k: v for k, v in ct.meta.items() if k != "affine"})


def _headers(folder: Path) -> list[pydicom.Dataset]:
    return [read_dicom(path) for path in sorted(folder.iterdir())]


def _sitk_series(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def test_series_has_the_ct_geometry_and_the_fused_values(tmp_path: Path, ct_series: Path, fused: MetaTensor) -> None:
    headers = _headers(ct_series)[::-1]  # any order: slices are matched by position
    written = write_fused_series(fused, headers, tmp_path, method="laplacian", window="lung")

    assert [path.name for path in written] == [f"fused_{i:04d}.dcm" for i in range(16)]
    ct, derived = _sitk_series(ct_series), _sitk_series(tmp_path)
    assert derived.GetSize() == ct.GetSize()
    assert np.allclose(derived.GetOrigin(), ct.GetOrigin()) and np.allclose(derived.GetSpacing(), ct.GetSpacing())
    assert np.allclose(derived.GetDirection(), ct.GetDirection())
    expected = np.rint(fused[0].numpy().transpose(2, 1, 0) * 4095)  # (X, Y, Z) -> SimpleITK's (Z, Y, X)
    assert np.array_equal(sitk.GetArrayFromImage(derived), expected)


def test_objects_are_derived_ct_images_in_the_source_study(tmp_path: Path, ct_series: Path, fused: MetaTensor) -> None:
    headers = _headers(ct_series)
    written = write_fused_series(fused, headers, tmp_path, method="dwt", window="mediastinal", series_number=9003)
    first, source = pydicom.dcmread(written[0]), min(headers, key=lambda h: float(h.ImagePositionPatient[2]))

    assert first.StudyInstanceUID == source.StudyInstanceUID
    assert first.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert first.SeriesInstanceUID != source.SeriesInstanceUID and first.SOPInstanceUID != source.SOPInstanceUID
    assert list(first.ImagePositionPatient) == list(source.ImagePositionPatient)
    assert list(first.ImageType[:2]) == ["DERIVED", "SECONDARY"] and first.Modality == "CT"
    assert first.SeriesDescription == "DCIF fusion dwt mediastinal" and first.SeriesNumber == 9003
    assert first.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert first.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    assert first.PatientID == source.PatientID and first.PatientBirthDate == ""
    assert len({pydicom.dcmread(path).SOPInstanceUID for path in written}) == len(written)


def test_rewriting_gives_identical_bytes_and_other_methods_other_uids(tmp_path: Path, ct_series: Path,
                                                                     fused: MetaTensor) -> None:
    headers = _headers(ct_series)
    first = write_fused_series(fused, headers, tmp_path / "a", method="max", window="lung")
    again = write_fused_series(fused, headers[::-1], tmp_path / "b", method="max", window="lung")
    other = write_fused_series(fused, headers, tmp_path / "c", method="average", window="lung")

    assert [path.read_bytes() for path in first] == [path.read_bytes() for path in again]
    assert pydicom.dcmread(first[0]).SeriesInstanceUID != pydicom.dcmread(other[0]).SeriesInstanceUID


def test_headers_that_do_not_fit_the_volume_are_refused(tmp_path: Path, ct_series: Path, fused: MetaTensor) -> None:
    headers = _headers(ct_series)
    with pytest.raises(InputError, match="16 slices but 15 CT headers"):
        write_fused_series(fused, headers[1:], tmp_path, method="max", window="lung")
    headers[4].Rows = 32
    with pytest.raises(InputError, match=r"ct_0004\.dcm: 32x64 pixels, the fused volume has 64x64"):
        write_fused_series(fused, headers, tmp_path, method="max", window="lung")
    assert not any(tmp_path.iterdir())
