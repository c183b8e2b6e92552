"""The fused volume as a derived DICOM object: valid, on the CT's grid, in its study, traceable, never a CT."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import replace
from datetime import datetime, timezone
from io import BytesIO
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import torch
from monai.data import MetaTensor

from pipeline.errors import InputError
from pipeline.io.derived_series import (
    COLOUR_SOP_CLASS,
    FUSED_SERIES_NUMBER,
    GREY_SOP_CLASS,
    DerivedSeriesWriter,
    Provenance,
    grey_frames,
    write_colour_series,
    write_fused_series,
)
from pipeline.io.dicom import load_series
from pipeline.io.headers import read_dicom
from pipeline.phantom import make_phantom

PROVENANCE = Provenance("laplacian", "lung", "no weights", 7.0)


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory, tiny_geometry: dict):
    root = tmp_path_factory.mktemp("derived_series_phantom")
    return make_phantom(root, ct_shape=tiny_geometry["size"], ct_spacing=tiny_geometry["spacing"], seed=3,
                        write_nifti=False)


@pytest.fixture(scope="module")
def fused(phantom) -> MetaTensor:
    """A stand-in fused volume on the CT grid: a ramp along every axis, so a swapped axis shows."""
    ct = load_series(phantom.ct_dir)
    x, y, z = (torch.linspace(0, 1, n) for n in ct.shape[1:])
    ramp = (0.5 * x[:, None, None] + 0.3 * y[None, :, None] + 0.2 * z[None, None, :])[None]
    return MetaTensor(ramp, affine=ct.affine, meta={k: v for k, v in ct.meta.items() if k != "affine"})


def _headers(folder: Path) -> list[pydicom.Dataset]:
    return [read_dicom(path) for path in sorted(folder.iterdir())]


def _write(phantom, fused: MetaTensor, out: Path, provenance: Provenance = PROVENANCE, **kwargs) -> Path:
    return write_fused_series(fused, _headers(phantom.ct_dir), _headers(phantom.pet_dir), out, provenance, **kwargs)


def _sitk_series(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def test_object_has_the_ct_geometry_and_the_fused_values(tmp_path: Path, phantom, fused: MetaTensor) -> None:
    headers = _headers(phantom.ct_dir)[::-1]  # any order: slices are matched by position
    written = write_fused_series(fused, headers, _headers(phantom.pet_dir), tmp_path, PROVENANCE)

    assert written == tmp_path / "fused.dcm"
    ct, derived = _sitk_series(phantom.ct_dir), sitk.ReadImage(str(written))
    assert derived.GetSize() == ct.GetSize()
    assert np.allclose(derived.GetOrigin(), ct.GetOrigin()) and np.allclose(derived.GetSpacing(), ct.GetSpacing())
    assert np.allclose(derived.GetDirection(), ct.GetDirection())
    expected = np.rint(fused[0].numpy().transpose(2, 1, 0) * 4095)  # (X, Y, Z) -> SimpleITK's (Z, Y, X)
    assert np.array_equal(sitk.GetArrayFromImage(derived), expected)


def test_object_is_a_derived_non_ct_image_in_the_source_study_referencing_ct_and_pet(
        tmp_path: Path, phantom, fused: MetaTensor) -> None:
    ct, pet = _headers(phantom.ct_dir), _headers(phantom.pet_dir)
    ds = pydicom.dcmread(_write(phantom, fused, tmp_path, replace(PROVENANCE, model_version="sha256:00ff"),
                                series_number=9003))
    source = min(ct, key=lambda h: float(h.ImagePositionPatient[2]))

    assert ds.SOPClassUID == GREY_SOP_CLASS and ds.Modality == "OT"  # a CT query or router never takes it
    assert ds.StudyInstanceUID == source.StudyInstanceUID and ds.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert ds.PatientID == source.PatientID and ds.PatientBirthDate == source.PatientBirthDate
    assert ds.SeriesInstanceUID not in {h.SeriesInstanceUID for h in ct + pet}
    assert list(ds.ImageType[:2]) == ["DERIVED", "SECONDARY"]
    assert ds.SeriesDescription == "DCIF fusion laplacian lung" and ds.SeriesNumber == 9003
    assert ds.NumberOfFrames == len(ct)
    positions = [list(frame.PlanePositionSequence[0].ImagePositionPatient) for frame in ds.PerFrameFunctionalGroupsSequence]
    assert positions[0] == list(source.ImagePositionPatient)
    referenced = {item.ReferencedSOPInstanceUID for item in ds.SourceImageSequence}
    assert referenced == {h.SOPInstanceUID for h in ct + pet}
    assert {item.PurposeOfReferenceCodeSequence[0].CodeValue for item in ds.SourceImageSequence} == {"121322"}
    assert {item.SeriesInstanceUID for item in ds.ReferencedSeriesSequence} == {ct[0].SeriesInstanceUID,
                                                                                 pet[0].SeriesInstanceUID}
    assert ds.DerivationCodeSequence[0].CodeValue == "110001"
    assert list(ds.SoftwareVersions) == [PROVENANCE.software_version, "model sha256:00ff"]
    assert ds.SeriesDate == ds.ContentDate == PROVENANCE.created.strftime("%Y%m%d")
    assert ds.SeriesTime == ds.ContentTime == PROVENANCE.created.strftime("%H%M%S")


@pytest.mark.parametrize("change", [{"model_version": "sha256:1234"}, {"method": "dwt"}, {"window": "mediastinal"},
                                    {"suv_max": 10.0}, {"pet_scaling": "SUVbw (factor 2 given by hand)"},
                                    {"software_version": "dcif-fusion 9.9"}])
def test_uids_change_whenever_the_pixels_may(tmp_path: Path, phantom, fused: MetaTensor, change: dict) -> None:
    first = pydicom.dcmread(_write(phantom, fused, tmp_path / "a"))
    later = pydicom.dcmread(_write(phantom, fused, tmp_path / "b", replace(PROVENANCE, created=PROVENANCE.created.replace(year=2030))))
    other = pydicom.dcmread(_write(phantom, fused, tmp_path / "c", replace(PROVENANCE, **change)))

    assert (later.SeriesInstanceUID, later.SOPInstanceUID) == (first.SeriesInstanceUID, first.SOPInstanceUID)
    assert other.SeriesInstanceUID != first.SeriesInstanceUID and other.SOPInstanceUID != first.SOPInstanceUID


def _write_headers(ct: list[pydicom.Dataset], pet: list[pydicom.Dataset], out: Path,
                   provenance: Provenance = PROVENANCE) -> pydicom.Dataset:
    """The object written for these headers (blank frames), read back."""
    shape = (int(ct[0].Columns), int(ct[0].Rows), len(ct))
    with DerivedSeriesWriter(ct, pet, out, provenance, FUSED_SERIES_NUMBER, shape) as writer:
        writer.write(np.zeros((len(ct), shape[1], shape[0]), np.uint16))
    return pydicom.dcmread(writer.path)


def _replace_instance(headers: list[pydicom.Dataset], index: int) -> list[pydicom.Dataset]:
    """The slice at ``index`` exported again as another instance (same place, new SOPInstanceUID)."""
    headers[index].SOPInstanceUID = pydicom.uid.generate_uid()
    return headers


# The CT and PET headers of a study exported again otherwise.
_EXPORTED_AGAIN = {
    "two_end_ct_slices_removed": lambda ct, pet: (ct[:-2], pet),
    "ct_slice_replaced": lambda ct, pet: (_replace_instance(ct, 3), pet),
    "pet_slice_removed": lambda ct, pet: (ct, pet[1:]),
    "pet_slice_replaced": lambda ct, pet: (ct, _replace_instance(pet, 2)),
}


@pytest.mark.parametrize("change", list(_EXPORTED_AGAIN))
def test_uids_change_when_the_source_instances_do(tmp_path: Path, phantom, change: str) -> None:
    """A study exported again with other slices and fused again kept its UIDs: a PACS kept the stale series."""
    ct, pet = _headers(phantom.ct_dir), _headers(phantom.pet_dir)
    first, same = _write_headers(ct, pet, tmp_path / "a"), _write_headers(ct, pet, tmp_path / "b")
    other = _write_headers(*_EXPORTED_AGAIN[change](ct, pet), tmp_path / "c")

    assert (same.SeriesInstanceUID, same.SOPInstanceUID) == (first.SeriesInstanceUID, first.SOPInstanceUID)
    assert other.SeriesInstanceUID != first.SeriesInstanceUID and other.SOPInstanceUID != first.SOPInstanceUID


# Patient and study elements a hospital's CT carries beyond the phantom's (made-up values).
_PATIENT_AND_STUDY = {
    "IssuerOfPatientID": "HOSP_A", "PatientBirthDate": "19610304", "ReferringPhysicianName": "Referrer^Ruth",
    "StudyDescription": "PET-CT WB FDG", "AccessionNumber": "ACC123", "PatientAge": "062Y",
    "TimezoneOffsetFromUTC": "+0100",
}


def _raw_patient_name(file: Path | BytesIO) -> bytes:
    """PatientName's bytes in a file, as they go to the PACS."""
    return pydicom.dcmread(file, stop_before_pixels=True).get_item("PatientName").value


@pytest.mark.parametrize(("charset", "name"), [
    ("ISO_IR 100", "Müller^Jürgen"), (["", "ISO 2022 IR 87"], "Yamada^Tarou=山田^太郎=やまだ^たろう")])
def test_patient_and_study_are_copied_exactly(tmp_path: Path, phantom, charset: str | list[str], name: str) -> None:
    """The issuer, other IDs, birth date, referring physician and study description were dropped or blanked: a PACS
    refuses an object whose patient differs from its study's (dcm4chee: Patient ID and issuer)."""
    ct = _headers(phantom.ct_dir)
    other_id = pydicom.Dataset()
    other_id.PatientID, other_id.IssuerOfPatientID = "OTHER-9", "HOSP_B"
    for header in ct:
        for keyword, value in {**_PATIENT_AND_STUDY, "SpecificCharacterSet": charset, "PatientName": name}.items():
            setattr(header, keyword, value)
        header.OtherPatientIDsSequence = [other_id]
    source = ct[0]
    ds = _write_headers(ct, _headers(phantom.pet_dir), tmp_path)

    kept = ["OtherPatientIDsSequence", *_PATIENT_AND_STUDY, "SpecificCharacterSet", "PatientName", "PatientID",
            "PatientSex", "PatientSize", "PatientWeight", "StudyInstanceUID", "StudyDate", "StudyTime", "StudyID"]
    assert {keyword: ds[keyword].value for keyword in kept} == {keyword: source[keyword].value for keyword in kept}
    saved = BytesIO()
    source.save_as(saved, enforce_file_format=True)
    assert _raw_patient_name(tmp_path / "fused.dcm") == _raw_patient_name(BytesIO(saved.getvalue()))


@pytest.mark.parametrize(("offset", "written", "date", "time"), [
    ("+0530", "+0530", "20240116", "050000"), ("-0500", "-0500", "20240115", "183000"),
    ("+2500", None, None, None), ("CET", None, None, None)])
def test_fusion_times_are_in_the_source_time_zone(tmp_path: Path, phantom, offset: str, written: str | None,
                                                  date: str | None, time: str | None) -> None:
    """SeriesTime was written in the server's zone beside the source's StudyTime in its own. An offset that is not
    one is not copied: the times are then the server's, as for a source without one."""
    ct = _headers(phantom.ct_dir)
    for header in ct:
        header.TimezoneOffsetFromUTC = offset
    created = datetime(2024, 1, 15, 23, 30, tzinfo=timezone.utc)
    ds = _write_headers(ct, _headers(phantom.pet_dir), tmp_path, replace(PROVENANCE, created=created))

    local = created.astimezone()
    assert ds.get("TimezoneOffsetFromUTC") == written
    for kind in ("Series", "Content", "InstanceCreation"):
        assert (ds[f"{kind}Date"].value, ds[f"{kind}Time"].value) == (date or local.strftime("%Y%m%d"),
                                                                      time or local.strftime("%H%M%S"))


_TYPE_2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "StudyID",
           "AccessionNumber", "ReferringPhysicianName", "PositionReferenceIndicator")


def test_type_2_elements_the_source_lacks_are_written_empty(tmp_path: Path, phantom) -> None:
    """They were left out, and dciodvfy reported "Missing attribute Type 2"."""
    ct = _headers(phantom.ct_dir)
    for header in ct:
        for keyword in _TYPE_2:
            delattr(header, keyword)
    ds = _write_headers(ct, _headers(phantom.pet_dir), tmp_path)

    assert {keyword: ds[keyword].value for keyword in _TYPE_2} == {keyword: "" for keyword in _TYPE_2}
    if shutil.which("dciodvfy"):
        assert not {line for line in _dciodvfy(tmp_path / "fused.dcm") if "Type 2" in line}


def test_colour_rendering_is_an_rgb_object_on_the_same_grid(tmp_path: Path, phantom, fused: MetaTensor) -> None:
    rgb = np.zeros((16, 64, 64, 3), np.uint8)
    rgb[3, 5, 7] = (255, 128, 0)
    path = write_colour_series(rgb, _headers(phantom.ct_dir), _headers(phantom.pet_dir), tmp_path, PROVENANCE)
    ds = pydicom.dcmread(path)
    grey = pydicom.dcmread(_write(phantom, fused, tmp_path / "grey"))

    assert ds.SOPClassUID == COLOUR_SOP_CLASS and ds.PhotometricInterpretation == "RGB"
    assert ds.SeriesInstanceUID != grey.SeriesInstanceUID and ds.FrameOfReferenceUID == grey.FrameOfReferenceUID
    assert ds.SeriesDescription == "DCIF fusion laplacian lung PET colour"
    assert np.array_equal(ds.pixel_array, rgb)
    assert np.allclose(sitk.ReadImage(str(path)).GetOrigin(), sitk.ReadImage(str(tmp_path / "grey" / "fused.dcm")).GetOrigin())


def test_headers_that_do_not_fit_the_volume_are_refused(tmp_path: Path, phantom, fused: MetaTensor) -> None:
    headers, pet = _headers(phantom.ct_dir), _headers(phantom.pet_dir)
    with pytest.raises(InputError, match="16 slices but 15 CT headers"):
        write_fused_series(fused, headers[1:], pet, tmp_path, PROVENANCE)
    headers[4].Rows = 32
    with pytest.raises(InputError, match=r"ct_0004\.dcm: 32x64 pixels, the fused volume has 64x64"):
        write_fused_series(fused, headers, pet, tmp_path, PROVENANCE)
    assert not any(tmp_path.iterdir())


def test_a_volume_too_large_for_one_object_is_refused_before_anything_is_written(tmp_path: Path, phantom) -> None:
    headers = _headers(phantom.ct_dir)
    for header in headers:
        header.Rows = header.Columns = 12000  # 16 frames of 12000 x 12000 x 2 bytes: 4.6 GB
    with pytest.raises(InputError, match="16 frames of 12000x12000 are 4608000000 bytes, more than one DICOM object"):
        DerivedSeriesWriter(headers, _headers(phantom.pet_dir), tmp_path, PROVENANCE, FUSED_SERIES_NUMBER,
                            (12000, 12000, 16))
    assert not any(tmp_path.iterdir())


def _dciodvfy(path: Path) -> set[str]:
    """dciodvfy's error and warning lines for one file, without the file-specific values."""
    output = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    lines = (output.stdout + output.stderr).splitlines()
    return {re.sub(r"<[^>]*>", "<>", line) for line in lines if line.startswith(("Error", "Warning"))}


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (Debian's dicom3tools) is not installed")
def test_validator_finds_nothing_the_source_ct_does_not_have(tmp_path: Path, phantom, fused: MetaTensor) -> None:
    source = _dciodvfy(next(phantom.ct_dir.iterdir()))
    grey = _write(phantom, fused, tmp_path / "grey")
    colour = write_colour_series(np.zeros((16, 64, 64, 3), np.uint8), _headers(phantom.ct_dir),
                                 _headers(phantom.pet_dir), tmp_path / "colour", PROVENANCE)
    assert _dciodvfy(grey) <= source
    assert _dciodvfy(colour) <= source


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (Debian's dicom3tools) is not installed")
@pytest.mark.parametrize(("body_part", "laterality", "written"), [
    ("CHEST", None, "absent"), ("EXTREMITY", None, ""), ("EXTREMITY", "L", "L"), (None, None, "")])
def test_laterality_is_there_for_a_paired_or_unnamed_body_part_only(
        tmp_path: Path, phantom, fused: MetaTensor, body_part: str | None, laterality: str | None,
        written: str) -> None:
    """The real sarcoma studies are EXTREMITY, a paired structure: their series needs Laterality (PS3.3 C.7.3.1)."""
    headers = _headers(phantom.ct_dir)
    for header in headers:
        if body_part is None:
            del header.BodyPartExamined
        else:
            header.BodyPartExamined = body_part
        if laterality is not None:
            header.Laterality = laterality
    path = write_fused_series(fused, headers, _headers(phantom.pet_dir), tmp_path, PROVENANCE)
    written_value = pydicom.dcmread(path).get("Laterality", "absent")
    assert (written_value or "") == written
    assert not {line for line in _dciodvfy(path) if "Laterality" in line and line.startswith("Error")}


def test_frames_written_in_slabs_give_the_object_written_whole(tmp_path: Path, phantom, fused: MetaTensor) -> None:
    whole = _write(phantom, fused, tmp_path / "whole")
    values = fused.numpy()[0]
    with DerivedSeriesWriter(_headers(phantom.ct_dir), _headers(phantom.pet_dir), tmp_path / "slabs", PROVENANCE,
                             FUSED_SERIES_NUMBER, values.shape) as writer:
        for start in range(0, values.shape[2], 5):
            writer.write(grey_frames(values[..., start : start + 5]))
    one, other = pydicom.dcmread(whole), pydicom.dcmread(writer.path)
    assert one.PixelData == other.PixelData
    assert [element for element in one if element.keyword not in ("PixelData",) and "Time" not in element.keyword] == [
        element for element in other if element.keyword not in ("PixelData",) and "Time" not in element.keyword]
    assert sorted(path.name for path in writer.path.parent.iterdir()) == ["fused.dcm"]  # no temporary is left


@pytest.mark.parametrize("mistake", ["too_few", "exception"])
def test_an_unfinished_series_leaves_no_file(tmp_path: Path, phantom, fused: MetaTensor, mistake: str) -> None:
    values = fused.numpy()[0]
    with pytest.raises((ValueError, RuntimeError)):
        with DerivedSeriesWriter(_headers(phantom.ct_dir), _headers(phantom.pet_dir), tmp_path, PROVENANCE,
                                 FUSED_SERIES_NUMBER, values.shape) as writer:
            writer.write(grey_frames(values[..., :2]))
            # what a killed run would leave: no name a forwarder watching for *.dcm would send
            (unfinished,) = tmp_path.iterdir()
            assert unfinished.name.startswith(".") and unfinished.suffix == ".tmp"
            if mistake == "exception":
                raise RuntimeError("fusion failed half-way")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("colour", [False, True])
def test_streamed_pixels_are_encoded_as_pydicom_encodes_them(tmp_path: Path, phantom, colour: bool) -> None:
    """Pixel Data's header is written by hand before the frames: the file equals pydicom's own writing of the same
    dataset, an odd number of RGB bytes (15 frames of 63 x 63) padded to even included."""
    headers = _headers(phantom.ct_dir)[:15]
    for header in headers:
        header.Rows = header.Columns = 63
    rng = np.random.default_rng(4)
    if colour:
        frames = rng.integers(0, 256, (15, 63, 63, 3), dtype=np.uint8)
        path = write_colour_series(frames, headers, _headers(phantom.pet_dir), tmp_path, PROVENANCE)
    else:
        frames = grey_frames(rng.random((63, 63, 15)))
        with DerivedSeriesWriter(headers, _headers(phantom.pet_dir), tmp_path, PROVENANCE, FUSED_SERIES_NUMBER,
                                 (63, 63, 15)) as writer:
            writer.write(frames)
        path = writer.path
    ds = pydicom.dcmread(path)
    assert np.array_equal(ds.pixel_array, frames)
    assert len(ds.PixelData) % 2 == 0
    again = BytesIO()
    ds.save_as(again, enforce_file_format=True)
    assert path.read_bytes() == again.getvalue()


def test_grey_frames_are_the_rounded_12_bit_values_frame_by_frame_in_display_layout() -> None:
    volume = np.random.default_rng(5).uniform(-0.2, 1.2, (7, 5, 3)).astype(np.float32)  # (X, Y, Z), out of range too
    frames = grey_frames(volume)
    expected = np.rint(np.clip(volume, 0.0, 1.0) * 4095).astype("<u2").transpose(2, 1, 0)
    assert frames.shape == (3, 5, 7) and frames.dtype == np.dtype("<u2") and frames.flags.c_contiguous
    assert np.array_equal(frames, expected) and frames.max() == 4095 and frames.min() == 0


def test_a_ct_without_slice_thickness_gives_slices_as_thick_as_they_are_apart(tmp_path: Path, phantom,
                                                                              fused: MetaTensor) -> None:
    """SliceThickness is type 2 in a CT and exports drop it: the writer failed with an AttributeError."""
    headers = _headers(phantom.ct_dir)
    step = abs(float(headers[1].ImagePositionPatient[2]) - float(headers[0].ImagePositionPatient[2]))
    for header in headers:
        del header.SliceThickness
    ds = pydicom.dcmread(write_fused_series(fused, headers, _headers(phantom.pet_dir), tmp_path, PROVENANCE))
    measures = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert float(measures.SliceThickness) == pytest.approx(step)


def test_a_de_identified_source_stays_marked_so(tmp_path: Path, phantom, fused: MetaTensor) -> None:
    """The fused series joins the CT's patient and study: it carries the CT's de-identification record with them."""
    headers = _headers(phantom.ct_dir)
    for header in headers:
        header.PatientIdentityRemoved, header.DeidentificationMethod = "YES", "test profile"
    ds = pydicom.dcmread(write_fused_series(fused, headers, _headers(phantom.pet_dir), tmp_path, PROVENANCE))
    assert (ds.PatientIdentityRemoved, ds.DeidentificationMethod) == ("YES", "test profile")
