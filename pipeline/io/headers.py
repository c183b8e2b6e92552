"""DICOM file primitives: below the folder walker (:mod:`~pipeline.io.discovery`), the loaders and the writers.

Reading one file's header with a one-line error, writing one dataset as a file (the phantom's
series and the derived fused series alike), a study's non-identifying key, a slice's geometry, an
undated acquisition time's day.
"""

from __future__ import annotations

import hashlib
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

from pipeline.errors import InputError, one_line
from pipeline.io.atomic import atomic_write
from pipeline.io.patient_space import voxel_size_problem

# Scanners write values past their VR's limits (a 17-character StudyID, say) that nothing here depends on; pydicom's
# default warned about each, twice, naming no file, in the middle of a batch's progress bars. They are read (and
# copied into the fused series) as they are.
pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE

SUV_SERIES_TAGS = ("Units", "SUVType", "DecayCorrection", "PatientWeight", "PatientSize", "PatientSex")
"""The series-level PET header fields SUV is computed from, besides the dose's sequence: patient fields among them,
which a PACS corrects in place (a weight typed wrong at the scanner), keeping every UID."""

UNDATED_DAY = date(2000, 1, 1)
"""The day a DICOM time without its date is placed on, so that times of day compare as moments."""
_HALF_DAY = timedelta(hours=12)  # an undated acquisition further from SeriesTime is on the day before or after
_ONE_DAY = timedelta(days=1)


def read_dicom(path: Path, *, header_only: bool = True, specific_tags: tuple[str, ...] | None = None) -> Dataset:
    """Read a DICOM file (by default its header only), turning every failure into a one-line InputError."""
    try:
        if path.stat().st_size == 0:
            raise InputError(f"{path}: empty file (0 bytes)")
        tags = list(specific_tags) if specific_tags else None
        return pydicom.dcmread(path, stop_before_pixels=header_only, specific_tags=tags, force=False)
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except InvalidDicomError:
        raise InputError(f"{path}: not a DICOM file (no DICM preamble/file meta)") from None
    except Exception as exc:  # pydicom raises many types on corrupt input; all mean "unreadable"
        raise InputError(f"{path}: unreadable DICOM file ({type(exc).__name__}: {one_line(exc)})") from None


def save_dicom(dataset: Dataset, file: Path | BinaryIO) -> None:
    """Save ``dataset`` as a DICOM file (explicit VR little endian) at a path or into an open binary file.

    The file meta follows the dataset's SOP class and instance, so a caller sets those once.
    """
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.MediaStorageSOPClassUID = dataset.SOPClassUID
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    dataset.save_as(file, enforce_file_format=True)


def write_dicom(dataset: Dataset, path: Path) -> None:
    """:func:`save_dicom` atomically: a reader never sees half a file."""
    with atomic_write(path) as temporary:
        save_dicom(dataset, temporary)


def study_key(study_uid: str) -> str:
    """Short, stable, non-identifying name for a study (safe for folder names and logs)."""
    return hashlib.sha256(study_uid.encode()).hexdigest()[:12]


def slice_normal(orientation: object) -> np.ndarray:
    """Unit normal of a slice from ImageOrientationPatient (row direction x column direction)."""
    iop = np.asarray(orientation, dtype=float)
    return np.cross(iop[:3], iop[3:])


_ORTHONORMAL_TOLERANCE = 0.01
"""How far ImageOrientationPatient's two directions may be from unit length and right angles: scanners write them
rounded to a few decimals, and a value past this describes no slice plane."""


def _numbers(header: Dataset, keyword: str, count: int, path: Path | str) -> np.ndarray:
    """``count`` finite numbers of a multi-valued header element, or an InputError naming the file and the value."""
    value = header.get(keyword)
    try:
        numbers = np.atleast_1d(np.asarray(value, dtype=float))
    except (TypeError, ValueError):
        numbers = np.empty(0)
    if numbers.shape != (count,) or not np.isfinite(numbers).all():
        raise InputError(f"{path}: {keyword} {one_line(value)[:64]!r} is not {count} numbers")
    return numbers


def header_number(header: Dataset, key: str | int, path: Path | str, name: str | None = None) -> float | None:
    """A single-valued numeric element (by keyword or tag; ``name`` names it in messages) as a finite number, None
    where absent or empty: text that is no number (a DS of 'abc') fails its file in one line naming the element,
    not as float()'s bare ValueError in the middle of a batch."""
    element = header.get(key)
    value = getattr(element, "value", element)
    if value is None or value in ("", b""):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not np.isfinite(number):
        raise InputError(f"{path}: {name or key} {one_line(value)[:64]!r} is not a number")
    return number


def pixel_spacing(header: Dataset, path: Path | str) -> np.ndarray:
    """A slice's PixelSpacing (between rows, between columns) in mm: two numbers a scanner would write."""
    spacing = _numbers(header, "PixelSpacing", 2, path)
    problem = voxel_size_problem(spacing, ("PixelSpacing between rows", "PixelSpacing between columns"))
    if problem:
        raise InputError(f"{path}: {problem}")
    return spacing


def slice_geometry(header: Dataset, path: Path | str) -> tuple[np.ndarray, np.ndarray]:
    """A slice's ImageOrientationPatient (6) and ImagePositionPatient (3) as numbers: a damaged or hostile value fails
    its file in one line instead of surfacing as numpy's error in the middle of a scan or a batch."""
    orientation = _numbers(header, "ImageOrientationPatient", 6, path)
    rows, columns = orientation[:3], orientation[3:]
    if not np.allclose([rows @ rows, columns @ columns, rows @ columns], [1.0, 1.0, 0.0], atol=_ORTHONORMAL_TOLERANCE):
        raise InputError(f"{path}: ImageOrientationPatient {orientation.tolist()} is not two orthogonal unit vectors")
    return orientation, _numbers(header, "ImagePositionPatient", 3, path)


def slice_position(header: Dataset, path: Path | str) -> float:
    """Position of a slice along its own normal (IOP cross product . IPP), checked by :func:`slice_geometry`."""
    orientation, position = slice_geometry(header, path)
    return float(slice_normal(orientation) @ position)


def undated_moment(time_of_day: time, series_time: time) -> datetime:
    """An undated acquisition time as a moment, on the day that puts it within 12 h of SeriesTime.

    Compared as times of day, a bed acquired at 00:03 would precede a 23:58 SeriesTime (and one at 23:50 follow
    a 00:10 SeriesTime a re-reconstruction wrote); a series and its acquisitions lie within hours. The one rule
    for both the loader's AcquisitionTime and SUV's decay reference.
    """
    moment, anchor = datetime.combine(UNDATED_DAY, time_of_day), datetime.combine(UNDATED_DAY, series_time)
    if moment < anchor - _HALF_DAY:
        return moment + _ONE_DAY
    return moment - _ONE_DAY if moment > anchor + _HALF_DAY else moment
