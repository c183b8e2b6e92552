"""DICOM file primitives: one dataset written as a file whose meta follows it, atomically."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from pipeline.errors import InputError
from pipeline.io.headers import read_dicom, write_dicom


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


@pytest.mark.filterwarnings("ignore:A value of type")
def test_a_failed_write_leaves_nothing(tmp_path: Path):
    ds = _dataset()
    ds.add_new("PixelData", "OW", object())  # not bytes: pydicom fails mid-write
    with pytest.raises(Exception):
        write_dicom(ds, tmp_path / "slice.dcm")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(InputError, match="file not found"):
        read_dicom(tmp_path / "slice.dcm")
