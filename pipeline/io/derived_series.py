"""Write a fused volume as a derived DICOM series that a PACS files next to the CT it came from.

One CT Image Storage object per CT slice, with the CT's study, frame of reference and slice
geometry, so a viewer hangs, scrolls and links it with the source CT, and SimpleITK rebuilds the
CT's grid from it. pydicom rather than highdicom: highdicom builds enhanced multi-frame objects
(parametric maps, secondary captures) that viewers do not stack with a single-frame CT and that
SimpleITK's series reader does not place in space.

Pixels are unsigned 12-bit integers, ``stored = round(fused * 4095)``, with RescaleSlope 1,
RescaleIntercept 0 and RescaleType ``US`` (unspecified units, not HU): fused intensities are
unit-less. Every UID is derived from the source UIDs, method and window, and nothing carries a
timestamp, so a re-run writes byte-identical files.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from monai.data import MetaTensor
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid

from pipeline.errors import InputError
from pipeline.io.atomic import atomic_write
from pipeline.io.discovery import slice_normal

FUSED_SERIES_NUMBER = 9000
MAX_STORED = 4095  # 12 bits stored: the range every CT viewer handles
MANUFACTURER = "DCIF-GAN fusion (dcif-fusion)"

# Source-study elements copied verbatim: PACS files the derived series under the same patient and study
# only when these match. Other identifying patient elements (birth date, ...) are left out.
_STUDY_TAGS = (
    "SpecificCharacterSet", "PatientName", "PatientID", "PatientSex", "StudyInstanceUID", "StudyDate",
    "StudyTime", "StudyID", "AccessionNumber", "FrameOfReferenceUID", "PositionReferenceIndicator",
    "PatientPosition",
)
# Type 2 elements of the CT Image IOD that must be present, and are left empty.
_EMPTY_TAGS = ("PatientBirthDate", "ReferringPhysicianName", "KVP", "AcquisitionNumber")
# Per-slice geometry copied from the CT slice the fused slice lies on.
_GEOMETRY_TAGS = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness",
                  "SliceLocation")


def dicom_folder_name(method: str, window: str) -> str:
    """Folder of one derived DICOM series, beside the NIfTI of the same method and window."""
    return f"dicom_{method}_{window}"


def fused_series_description(method: str, window: str) -> str:
    """What a radiologist sees in the series list: the method and the CT window."""
    return f"DCIF fusion {method} {window}"


def _position(header: Dataset) -> float:
    return float(slice_normal(header.ImageOrientationPatient) @ np.asarray(header.ImagePositionPatient, float))


def _ordered_headers(ct_headers: Sequence[Dataset], volume: MetaTensor) -> list[Dataset]:
    """CT headers in the volume's slice order (by position), after checking they describe its grid."""
    columns, rows, n_slices = volume.shape[1:]
    if len(ct_headers) != n_slices:
        raise InputError(f"{volume.meta.get('filename_or_obj', 'fused volume')}: {n_slices} slices but "
                         f"{len(ct_headers)} CT headers to place them")
    for header in ct_headers:
        if (int(header.Rows), int(header.Columns)) != (rows, columns):
            where = getattr(header, "filename", None) or f"CT slice {header.SOPInstanceUID}"
            raise InputError(f"{where}: {header.Rows}x{header.Columns} pixels, the fused volume has {rows}x{columns}")
    return sorted(ct_headers, key=_position)


def _series_template(first: Dataset, series_uid: str, method: str, window: str, series_number: int) -> Dataset:
    """Elements shared by every slice of the derived series."""
    ds = Dataset()
    for keyword in _STUDY_TAGS:
        if keyword in first:
            setattr(ds, keyword, first.data_element(keyword).value)
    for keyword in _EMPTY_TAGS:
        setattr(ds, keyword, None)
    ds.SOPClassUID = CTImageStorage
    ds.Modality = "CT"  # so viewers hang it with the CT; RescaleType says the values are not HU
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.SeriesDescription = fused_series_description(method, window)
    ds.Manufacturer = MANUFACTURER
    ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
    ds.DerivationDescription = (f"PET/CT fusion by {method} of the CT ({window} window) and the PET "
                                f"resampled onto the CT grid; stored = round(fused * {MAX_STORED})")
    for keyword in ("ContentDate", "ContentTime"):  # source times, never the clock: re-runs are identical
        if keyword in first:
            setattr(ds, keyword, first.data_element(keyword).value)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0", "1", "US"
    ds.WindowCenter, ds.WindowWidth = str(MAX_STORED / 2), str(MAX_STORED + 1)
    return ds


def _reference_source(ds: Dataset, header: Dataset) -> None:
    """Point a fused slice at its CT slice: the Source Image and the Common Instance Reference modules."""
    source = Dataset()
    source.ReferencedSOPClassUID = header.SOPClassUID
    source.ReferencedSOPInstanceUID = header.SOPInstanceUID
    ds.SourceImageSequence = [source]
    series = Dataset()
    series.SeriesInstanceUID = header.SeriesInstanceUID
    series.ReferencedInstanceSequence = [source]
    ds.ReferencedSeriesSequence = [series]


def write_fused_series(
    volume: MetaTensor,
    ct_headers: Sequence[Dataset],
    out_dir: str | os.PathLike[str],
    *,
    method: str,
    window: str,
    series_number: int = FUSED_SERIES_NUMBER,
) -> list[Path]:
    """Write a ``(1, X, Y, Z)`` fused volume in [0, 1] on the CT grid as ``fused_<index>.dcm`` files.

    ``ct_headers`` are the CT slices' headers (any order; pixel data not needed); the volume's z index
    ``i`` is the ``i``-th of them by position along the slice normal, as the DICOM loader orders them.
    Each file is written atomically. Raises InputError when the headers do not match the volume.
    """
    ordered = _ordered_headers(ct_headers, volume)
    first = ordered[0]
    series_uid = generate_uid(entropy_srcs=["dcif-fused-series", first.SeriesInstanceUID, method, window])
    template = _series_template(first, series_uid, method, window, series_number)
    # (X, Y, Z) -> (Z, rows = Y, columns = X) in one pass, so each slice's pixels are contiguous bytes.
    values = np.clip(volume.detach().cpu().numpy()[0], 0.0, 1.0).transpose(2, 1, 0)
    stored = np.ascontiguousarray(np.rint(values * MAX_STORED), dtype="<u2")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for index, header in enumerate(ordered):
        ds = Dataset()
        ds.update(template)
        ds.SOPInstanceUID = generate_uid(entropy_srcs=[series_uid, header.SOPInstanceUID])
        ds.InstanceNumber = index + 1
        for keyword in _GEOMETRY_TAGS:
            if keyword in header:
                setattr(ds, keyword, header.data_element(keyword).value)
        ds.Rows, ds.Columns = header.Rows, header.Columns
        _reference_source(ds, header)
        ds.PixelData = stored[index].tobytes()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        path = out_dir / f"fused_{index:04d}.dcm"
        with atomic_write(path) as temporary:
            ds.save_as(temporary, enforce_file_format=True)
        written.append(path)
    return written
