"""DICOM file primitives: one dataset written as a file whose meta follows it, atomically; a slice's geometry."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from pipeline.errors import InputError
from pipeline.io.headers import read_dicom, slice_geometry, slice_position, write_dicom


def _dataset() -> Dataset:
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, generate_uid()
    ds.Modality, ds.SeriesDescription = "CT", "test"
    return ds


def test_written_file_reads_back_with_meta_from_the_dataset(tmp_path: Path):
    ds = _dataset()
    path = tmp_path / "slice.dcm"
    write_dicom(ds, path)
    back = read_dicom(path)
    assert back.SeriesDescription == "test" and back.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert back.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert back.file_meta.MediaStorageSOPClassUID == CTImageStorage
    assert [p.name for p in tmp_path.iterdir()] == ["slice.dcm"]  # no temporary left beside it


def test_a_source_value_past_its_vr_limit_is_read_as_it_is_without_a_warning(tmp_path: Path, recwarn):
    """Real exports hold such values (a 17-character StudyID); each gave a warning naming no file, mid progress bar."""
    ds = _dataset()
    ds.StudyID = "S" * 17
    write_dicom(ds, tmp_path / "slice.dcm")
    assert read_dicom(tmp_path / "slice.dcm").StudyID == "S" * 17
    assert [str(warning.message) for warning in recwarn] == []


@pytest.mark.filterwarnings("ignore:A value of type")
def test_a_failed_write_leaves_nothing(tmp_path: Path):
    ds = _dataset()
    ds.add_new("PixelData", "OW", object())  # not bytes: pydicom fails mid-write
    with pytest.raises(Exception):
        write_dicom(ds, tmp_path / "slice.dcm")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(InputError, match="file not found"):
        read_dicom(tmp_path / "slice.dcm")


def _raw(ds: Dataset, keyword: str, text: str) -> None:
    """Put a DS value into ``ds`` as a file would carry it, unvalidated (pydicom refuses such values when set)."""
    value = text.encode() + b" " * (len(text) % 2)
    tag = Tag(keyword)
    ds[tag] = RawDataElement(tag, "DS", len(value), value, 0, True, True)


@pytest.mark.filterwarnings("ignore:Invalid value for VR DS")
@pytest.mark.parametrize(("keyword", "text", "problem"), [
    ("ImagePositionPatient", "abcdefg\\1\\2", "is not 3 numbers"),
    ("ImagePositionPatient", "1\\2", "is not 3 numbers"),
    ("ImagePositionPatient", "1\\2\\nan", "is not 3 numbers"),
    ("ImageOrientationPatient", "1\\0\\0", "is not 6 numbers"),
    ("ImageOrientationPatient", "0\\0\\0\\0\\0\\0", "is not two orthogonal unit vectors"),
    ("ImageOrientationPatient", "1\\0\\0\\1\\0\\0", "is not two orthogonal unit vectors"),
])
def test_a_damaged_slice_geometry_fails_its_file_in_one_line(keyword: str, text: str, problem: str):
    ds = Dataset()
    _raw(ds, "ImageOrientationPatient", "1\\0\\0\\0\\1\\0")
    _raw(ds, "ImagePositionPatient", "-10\\-20\\30")
    assert slice_position(ds, Path("slice.dcm")) == 30.0
    _raw(ds, keyword, text)
    with pytest.raises(InputError, match=rf"^slice\.dcm: {keyword} .*{problem}$"):
        slice_geometry(ds, Path("slice.dcm"))


def test_orientation_rounded_as_scanners_write_it_is_accepted():
    ds = Dataset()
    _raw(ds, "ImageOrientationPatient", "0.999848\\0\\0.017452\\0\\1\\0")
    _raw(ds, "ImagePositionPatient", "0\\0\\5")
    assert slice_position(ds, "slice.dcm") == pytest.approx(-0.017452 * 0 + 0.999848 * 5, abs=1e-5)
