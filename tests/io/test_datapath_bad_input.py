"""Bad input: every case gives a one-line InputError naming the file, and discovery survives them all."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from pipeline.errors import InputError
from pipeline.io.dicom import load_series
from pipeline.io.discovery import discover_studies
from pipeline.transforms.suv import PETToSUV


def _raises_one_line(call, *fragments: str) -> str:
    """Run ``call``; it must raise our InputError whose single-line message contains every fragment."""
    with pytest.raises(InputError) as info:
        call()
    message = str(info.value)
    assert type(info.value) is InputError
    assert "\n" not in message
    assert info.value.__cause__ is None  # no chained library traceback
    for fragment in fragments:
        assert fragment in message
    return message


def _truncate(path: Path, keep: int) -> Path:
    """Keep the first ``keep`` bytes (negative: drop that many from the end)."""
    path.write_bytes(path.read_bytes()[:keep])
    return path


def test_empty_file(tmp_path: Path):
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    _raises_one_line(lambda: load_series(empty), str(empty), "empty file")


def test_not_dicom(tmp_path: Path):
    text = tmp_path / "notes.dcm"
    text.write_text("hello")
    _raises_one_line(lambda: load_series(text), str(text), "not a DICOM file")


def test_truncated_pixel_data(dicom_factory):
    path = dicom_factory.series("ct", modality="CT") / "z002.dcm"
    _truncate(path, -20)
    _raises_one_line(lambda: load_series(sorted(path.parent.iterdir())), str(path), "pixel data")


def test_truncated_header(dicom_factory):
    path = dicom_factory.series("ct", modality="CT") / "z002.dcm"
    _truncate(path, 400)
    message = _raises_one_line(lambda: load_series(path), str(path))
    assert "missing" in message or "unreadable" in message


def test_rtstruct_is_not_an_image(dicom_factory):
    path = dicom_factory.rtstruct("rt/RS.dcm")
    _raises_one_line(lambda: load_series(path), str(path), "not an image slice", "RTSTRUCT")


def test_slice_without_pixel_data(dicom_factory):
    path = dicom_factory.series("ct", modality="CT") / "z003.dcm"
    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.save_as(path)
    _raises_one_line(lambda: load_series(path.parent), str(path), "no pixel data")


def test_undecodable_pixel_data(dicom_factory):
    def lie_about_bits(ds, k):
        if k == 1:
            ds.BitsAllocated = 32  # the 16-bit payload is now half the expected length

    folder = dicom_factory.series("ct", modality="CT", header=lie_about_bits)
    _raises_one_line(lambda: load_series(folder), "z003.dcm", "pixel data")


def test_duplicate_slice_positions(dicom_factory):
    folder = dicom_factory.series("ct", modality="CT", positions=[0.0, 3.0, 3.0, 6.0])
    _raises_one_line(lambda: load_series(folder), "duplicate slice position 33.000 mm", str(folder))


def test_mixed_orientations(dicom_factory):
    def tilt(ds, k):
        if k == 2:
            ds.ImageOrientationPatient = [1, 0, 0, 0, 0.995037, 0.0995037]

    folder = dicom_factory.series("ct", modality="CT", header=tilt)
    _raises_one_line(lambda: load_series(folder), "mixed orientations", str(folder))


def test_tilted_stack(dicom_factory):
    def shear(ds, k):
        position = [float(v) for v in ds.ImagePositionPatient]
        ds.ImagePositionPatient = [position[0], position[1] + 0.5 * k, position[2]]

    folder = dicom_factory.series("ct", modality="CT", header=shear)
    _raises_one_line(lambda: load_series(folder), "gantry tilt", "0.50 mm off the stack")


def test_mixed_matrix_sizes(dicom_factory):
    folder = dicom_factory.series("ct", modality="CT")
    dicom_factory.series("small", np.zeros((3, 3, 1)), modality="CT", positions=[20.0])
    odd = dicom_factory.root / "small" / "z001.dcm"
    ds = pydicom.dcmread(odd)
    ds.SeriesInstanceUID = pydicom.dcmread(folder / "z001.dcm").SeriesInstanceUID
    ds.save_as(odd)
    _raises_one_line(lambda: load_series([*folder.iterdir(), odd]), "mixed Rows/Columns")


def test_mixed_series(dicom_factory):
    a = dicom_factory.series("a", modality="CT")
    b = dicom_factory.series("b", modality="CT", positions=[30.0, 33.0, 36.0, 39.0])
    _raises_one_line(lambda: load_series([*a.iterdir(), *b.iterdir()]), "mixed series")


def test_folder_with_two_series(dicom_factory):
    dicom_factory.series("both/a", modality="CT")
    dicom_factory.series("both/b", modality="PT")
    folder = dicom_factory.root / "both"
    _raises_one_line(lambda: load_series(folder), str(folder), "found 2")


def test_multiframe_is_refused(dicom_factory):
    folder = dicom_factory.series("ct", modality="CT", header=lambda ds, k: setattr(ds, "NumberOfFrames", 4))
    _raises_one_line(lambda: load_series(folder), "multi-frame")


def test_folder_without_dicom(tmp_path: Path):
    (tmp_path / "a.txt").write_text("x")
    _raises_one_line(lambda: load_series(tmp_path), f"no DICOM files found under {tmp_path}")
    _raises_one_line(lambda: discover_studies(tmp_path), f"no DICOM files found under {tmp_path}")


def test_pet_without_radiopharmaceutical_headers(dicom_factory):
    def strip(ds, k):
        del ds.RadiopharmaceuticalInformationSequence

    pet = load_series(dicom_factory.series("pet", modality="PT", header=strip))  # loading is fine...
    folder = str(dicom_factory.root / "pet")
    _raises_one_line(lambda: PETToSUV()(pet), folder, "RadionuclideTotalDose")  # ...SUV is not
    by_hand = PETToSUV(dose_bq=dicom_factory.pet_dose_bq)  # a dose given by hand still needs its time
    _raises_one_line(lambda: by_hand(pet), folder, "RadiopharmaceuticalStartTime")


def test_discovery_survives_every_bad_file(dicom_factory):
    good = dicom_factory.series("study/ct", modality="CT")
    dicom_factory.series("study/pet", modality="PT")
    bad = dicom_factory.root / "study" / "bad"
    bad.mkdir()
    (bad / "empty.dcm").write_bytes(b"")
    (bad / "text.dcm").write_text("hello")
    shutil.copy(good / "z001.dcm", bad / "cut_header.dcm")
    _truncate(bad / "cut_header.dcm", 300)
    shutil.copy(good / "z002.dcm", bad / "cut_pixels.dcm")
    _truncate(bad / "cut_pixels.dcm", -10)
    dicom_factory.rtstruct("study/bad/RS.dcm")
    dicom_factory.series("lonely_ct", modality="CT", study_uid=pydicom.uid.generate_uid())

    result = discover_studies(dicom_factory.root)

    problems = {p.path.name for p in result.problems}
    assert {"empty.dcm", "text.dcm"} <= problems
    assert all("\n" not in p.reason for p in result.problems)
    assert len(result.failures) == 1 and "no PET" in result.failures[0].reason
    assert len(result.pairs) == 1


def test_a_coronal_dicom_ct_is_refused_by_the_data_path(dicom_factory):
    """Fused on its own (coronal) slices it was blanked and scored along the wrong axis; its fused DICOM series is
    written on those slices, so it is refused rather than restacked."""
    from pipeline.transforms import LoadStudyd

    coronal = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)
    ct = dicom_factory.series("study/ct", modality="CT", orientation=coronal)
    pet = dicom_factory.series("study/pet", modality="PT")
    message = _raises_one_line(lambda: LoadStudyd()({"ct": ct, "pet": pet}), str(ct), "slices are not axial",
                               "90 degrees from the head-foot axis")
    assert message.startswith(f"{ct}: ")


def _replace_bytes(folder: Path, old: bytes, new: bytes) -> None:
    """Overwrite a header value in every file of ``folder`` with text of the same length that pydicom cannot set."""
    for path in folder.iterdir():
        data = path.read_bytes()
        assert old in data
        path.write_bytes(data.replace(old, new))


@pytest.mark.parametrize("modality, keyword, valid, text", [
    ("PT", "RescaleSlope", "1.234567", b"abcdefgh"),
    ("CT", "RescaleIntercept", "-1024.12", b"minus1024"[:8]),
    ("CT", "SliceThickness", "7.654321", b"zzzzzzzz"),
    ("PT", "ActualFrameDuration", "1200001", b"forever"),
])
def test_header_text_that_is_no_number_names_the_file_and_the_element(dicom_factory, modality, keyword, valid, text):
    """Such values ended the study in float()'s bare 'could not convert string to float', naming neither."""
    folder = dicom_factory.series("series", modality=modality, header=lambda ds, k: setattr(ds, keyword, valid))
    _replace_bytes(folder, valid.encode(), text)
    _raises_one_line(lambda: load_series(folder), str(folder), f"{keyword} {text.decode()!r} is not a number")


def test_a_patient_weight_that_is_no_number_names_the_series(dicom_factory):
    folder = dicom_factory.series("pet", modality="PT", header=lambda ds, k: setattr(ds, "PatientWeight", "75.12345"))
    _replace_bytes(folder, b"75.12345", b"abc xyz ")
    pet = load_series(folder)
    _raises_one_line(lambda: PETToSUV()(pet), str(folder), "PatientWeight 'abc xyz' is not a number")


@pytest.mark.parametrize("spacing, fragment", [
    (["0", "0"], "PixelSpacing between rows 0 mm is not a voxel size"),
    (["-4", "-4"], "PixelSpacing between rows -4 mm is not a voxel size"),
    (["1", "1e6"], "PixelSpacing between columns 1e+06 mm is not a voxel size"),
    (["NaN", "NaN"], "is not 2 numbers"),
])
def test_pixel_spacing_no_scanner_writes_is_refused_naming_the_file(dicom_factory, spacing, fragment):
    """A PET of spacing -4 or 1e-6 mm lay beside its CT and was fused as CT alone; 0 ended in nibabel's affine
    error and numpy warnings; NaN was reported as 'differs from' the very same file."""
    folder = dicom_factory.series("ct", modality="CT", header=lambda ds, k: setattr(ds, "PixelSpacing", spacing))
    _raises_one_line(lambda: load_series(folder), str(folder), ".dcm: ", fragment)


def test_slices_metres_apart_are_refused(dicom_factory):
    folder = dicom_factory.series("pet", modality="PT", positions=[0.0, 1e5, 2e5, 3e5])
    _raises_one_line(lambda: load_series(folder), str(folder), "slice step 100000 mm is not a voxel size")


def test_a_rescale_slope_of_zero_is_refused(dicom_factory):
    """Every pixel of such a PET is its intercept: it was fused as a CT alone and labelled SUV."""
    folder = dicom_factory.series("pet", modality="PT", header=lambda ds, k: setattr(ds, "RescaleSlope", "0"))
    _raises_one_line(lambda: load_series(folder), str(folder), "RescaleSlope 0")


@pytest.mark.parametrize("keyword, value", [("Units", "CNTS"), ("PatientWeight", "90")])
def test_a_pet_slice_with_another_suv_header_than_the_first_is_refused(dicom_factory, keyword, value):
    """SUV reads the first slice's header for the series: a slice in counts, or of another weight, was fused as if
    it said what the first one says."""
    folder = dicom_factory.series("pet", modality="PT",
                                  header=lambda ds, k: setattr(ds, keyword, value) if k == 2 else None)
    _raises_one_line(lambda: load_series(folder), str(folder), f"{keyword} ", "differs from", "mixed PET headers")
