"""Tiny synthetic DICOM series written with pydicom, so the I/O tests control every header and pixel.

File names run against slice position and InstanceNumber is scrambled, so a loader that orders by
either would fail. Patient identifiers are set to recognisable values that tests check never leak.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import get_decoder
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, JPEGLosslessSV1, PYDICOM_IMPLEMENTATION_UID, generate_uid

SECRET_NAME = "SECRET^PATIENT"
SECRET_ID = "SECRET-ID-4711"
SECRET_BIRTH_DATE = "19450102"
STUDY_UID = generate_uid(entropy_srcs=["study"])
FRAME_UID = generate_uid(entropy_srcs=["frame"])
SOP_CLASSES = {"CT": "1.2.840.10008.5.1.4.1.1.2", "PT": "1.2.840.10008.5.1.4.1.1.128",
               "RTSTRUCT": "1.2.840.10008.5.1.4.1.1.481.3"}
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
PET_DOSE_BQ = 3.7e8
PET_WEIGHT_KG = 70.0


def _base_dataset(modality: str, study_uid: str, series_uid: str) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SOP_CLASSES[modality]
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SOPClassUID = SOP_CLASSES[modality]
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.Modality = modality
    ds.PatientName = SECRET_NAME
    ds.PatientID = SECRET_ID
    ds.PatientBirthDate = SECRET_BIRTH_DATE
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = "20240105"
    return ds


def _pet_header(ds: Dataset) -> None:
    """Body-weight SUV fields: injection 09:00, series start 10:00 (3600 s of F-18 decay)."""
    ds.Units = "BQML"
    ds.DecayCorrection = "START"
    ds.CorrectedImage = ["DECY", "ATTN"]
    ds.PatientWeight = str(PET_WEIGHT_KG)
    ds.SeriesTime = "100000"
    ds.AcquisitionTime = "100000"
    item = Dataset()
    item.Radiopharmaceutical = "Fluorodeoxyglucose"
    item.RadiopharmaceuticalStartTime = "090000"
    item.RadionuclideTotalDose = str(PET_DOSE_BQ)
    item.RadionuclideHalfLife = "6586.2"
    ds.RadiopharmaceuticalInformationSequence = Sequence([item])


def write_series(folder: Path, values: np.ndarray, *, modality: str = "CT", origin=(-10.0, -20.0, 30.0),
                 spacing=(2.0, 1.5, 3.0), orientation=AXIAL, study_uid: str = STUDY_UID,
                 frame_uid: str = FRAME_UID, series_uid: str | None = None, description: str = "",
                 positions: list[float] | None = None, header: Callable[[Dataset, int], None] | None = None,
                 ) -> list[Path]:
    """Write ``values`` (X, Y, Z) as one series; ``positions`` overrides the slice offsets (mm along the normal).

    CT is stored as int16 HU + 1024 (intercept -1024); PET as int16 with a per-slice slope.
    ``header(ds, k)`` may edit each slice before it is saved.
    """
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    iop = np.asarray(orientation, float)
    normal = np.cross(iop[:3], iop[3:])
    n_slices = values.shape[2]
    offsets = positions if positions is not None else [k * spacing[2] for k in range(n_slices)]
    paths = []
    for k in range(n_slices):
        ds = _base_dataset(modality, study_uid, series_uid)
        ds.FrameOfReferenceUID = frame_uid
        ds.SeriesDescription = description
        ds.InstanceNumber = (k * 7) % n_slices + 1
        ds.ImageOrientationPatient = [f"{v:g}" for v in iop]
        ds.ImagePositionPatient = [f"{v:.4f}" for v in np.asarray(origin) + offsets[k] * normal]
        ds.PixelSpacing = [f"{spacing[1]:g}", f"{spacing[0]:g}"]  # row spacing (y), column spacing (x)
        ds.SliceThickness = f"{spacing[2]:g}"
        ds.Rows, ds.Columns = values.shape[1], values.shape[0]
        plane = values[:, :, k].T  # (rows, columns)
        if modality == "PT":
            _pet_header(ds)
            slope = max(float(plane.max()), 1e-6) / 32000.0
            intercept = 0.0
        else:
            slope, intercept = 1.0, -1024.0
        ds.RescaleSlope, ds.RescaleIntercept = f"{slope:.10g}", f"{intercept:g}"
        slope = float(ds.RescaleSlope)
        stored = np.round((plane - intercept) / slope).astype(np.int16)
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.PixelData = stored.tobytes()
        if header is not None:
            header(ds, k)
        path = folder / f"z{n_slices - k:03d}.dcm"  # names sort against position on purpose
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def write_rtstruct(path: Path, study_uid: str = STUDY_UID, contours: dict[str, list] | None = None) -> Path:
    """A minimal RTSTRUCT (no pixels, no slice geometry) like the ones shipped next to real series.

    ``contours``: ROI name -> closed planar contours, each an (N, 3) array of LPS mm points.
    """
    ds = _base_dataset("RTSTRUCT", study_uid, generate_uid())
    ds.FrameOfReferenceUID = FRAME_UID
    ds.StructureSetLabel = "GTV"
    if contours is not None:
        ds.StructureSetROISequence, ds.ROIContourSequence = Sequence(), Sequence()
        for number, (name, polygons) in enumerate(contours.items(), start=1):
            roi = Dataset()
            roi.ROINumber, roi.ROIName = number, name
            ds.StructureSetROISequence.append(roi)
            item = Dataset()
            item.ReferencedROINumber = number
            item.ContourSequence = Sequence()
            for points in polygons:
                contour = Dataset()
                contour.ContourGeometricType = "CLOSED_PLANAR"
                contour.NumberOfContourPoints = len(points)
                contour.ContourData = [float(v) for v in np.asarray(points).ravel()]
                item.ContourSequence.append(contour)
            ds.ROIContourSequence.append(item)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def left_by_a_killed_run(temporary: Path, data: bytes = b"a truncated file") -> Path:
    """``temporary`` as a run killed an hour ago left it: older than any sweep's idle time (IDLE_TEMPORARY_S)."""
    temporary.write_bytes(data)
    an_hour_ago = time.time() - 3600
    os.utime(temporary, (an_hour_ago, an_hour_ago))
    return temporary


def ramp_volume(shape=(6, 5, 4), base: float = 0.0) -> np.ndarray:
    """Values encoding their own voxel index (100 x + 10 y + z), so any mis-ordering is visible."""
    x, y, z = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    return (base + 100.0 * x + 10.0 * y + z).astype(np.float64)


def jpeg_lossless_frame(pixels: np.ndarray) -> bytes:
    """A (rows, columns) 16-bit frame as a JPEG Lossless, first-order prediction (Process 14, SV1) codestream.

    pydicom encodes no JPEG Lossless, yet PACS exports use it most; this minimal encoder (one Huffman table giving
    each of the 17 difference categories a 5-bit code) lets the tests decode a known frame.
    """
    x = pixels.astype(np.int64) & 0xFFFF
    prediction = np.empty_like(x)
    prediction[0, 0] = 1 << 15  # 2^(P-1): the first sample's
    prediction[0, 1:] = x[0, :-1]  # first row: the sample to the left
    prediction[1:, 0] = x[:-1, 0]  # first column: the sample above
    prediction[1:, 1:] = x[1:, :-1]  # selection value 1: the sample to the left
    bits = []
    for difference in ((x - prediction + 32768) % 65536 - 32768).ravel().tolist():
        category = 16 if difference == -32768 else abs(difference).bit_length()
        bits.append(f"{category:05b}")
        if 0 < category < 16:
            extra = difference if difference > 0 else difference + (1 << category) - 1
            bits.append(f"{extra:0{category}b}")
    stream = "".join(bits)
    stream += "1" * (-len(stream) % 8)
    scan = int(stream, 2).to_bytes(len(stream) // 8, "big").replace(b"\xff", b"\xff\x00")
    rows, columns = pixels.shape
    huffman = bytes([0x00, 0, 0, 0, 0, 17, *[0] * 11, *range(17)])
    frame = bytes([16]) + rows.to_bytes(2, "big") + columns.to_bytes(2, "big") + bytes([1, 1, 0x11, 0])
    segments = [(0xC4, huffman), (0xC3, frame), (0xDA, bytes([1, 1, 0x00, 1, 0, 0]))]
    return (b"\xff\xd8" + b"".join(b"\xff" + bytes([marker]) + (len(body) + 2).to_bytes(2, "big") + body
                                  for marker, body in segments) + scan + b"\xff\xd9")


def as_jpeg_lossless(ds: Dataset, k: int) -> None:
    """A :func:`write_series` ``header`` hook: store the slice's pixels JPEG Lossless SV1 compressed."""
    ds.PixelData = encapsulate([jpeg_lossless_frame(ds.pixel_array)])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1


@pytest.fixture
def no_jpeg_lossless_decoder(monkeypatch: pytest.MonkeyPatch) -> None:
    """pydicom's JPEG Lossless SV1 decoder as it is where neither gdcm nor pylibjpeg-libjpeg is installed."""
    decoder = get_decoder(JPEGLosslessSV1)
    monkeypatch.setattr(decoder, "_available", {})
    monkeypatch.setattr(decoder, "_unavailable", {"gdcm": ("gdcm>=3.0.10",),
                                                  "pylibjpeg": ("pylibjpeg>=2.0", "pylibjpeg-libjpeg>=2.1")})


class DicomFactory:
    """Writes tiny series and objects below one test's tmp folder; returns their folders/paths."""

    identifiers = (SECRET_NAME, SECRET_ID, SECRET_BIRTH_DATE)
    study_uid = STUDY_UID
    frame_uid = FRAME_UID
    pet_dose_bq = PET_DOSE_BQ
    pet_weight_kg = PET_WEIGHT_KG
    ramp = staticmethod(ramp_volume)
    jpeg_lossless = staticmethod(as_jpeg_lossless)

    def __init__(self, root: Path):
        self.root = root

    def series(self, name: str, values: np.ndarray | None = None, **options) -> Path:
        """Write a series into ``root/name`` (default values: a 6x5x4 ramp); see :func:`write_series`."""
        folder = self.root / name
        write_series(folder, ramp_volume() if values is None else values, **options)
        return folder

    def rtstruct(self, name: str, **options) -> Path:
        return write_rtstruct(self.root / name, **options)


@pytest.fixture
def dicom_factory(tmp_path: Path) -> DicomFactory:
    return DicomFactory(tmp_path)
