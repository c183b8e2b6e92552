"""Load one DICOM image series as a channel-first RAS ``MetaTensor``.

Slices are ordered by their position along the slice normal (file names and InstanceNumber are not
reliable), rescaled slice by slice (PET slopes differ per slice) and written a block of slices at a time into one
preallocated volume: float32, or int16 for a CT whose HU are whole numbers (:mod:`pipeline.io.volume_fill`), so a
large CT never exists as both an integer and a float copy. A volume is a regular stack: tilted
(sheared) series are refused, and so are gaps (missing slices: resampling across them would invent
data), and so are steps so uneven that a slice lies over half a step from its place on an even grid; slightly
uneven steps are reported, and the volume uses the mean step.
The affine and axis order are those of MONAI's ``PydicomReader`` (axis 0 = DICOM column, 1 = row,
2 = slice; LPS turned into RAS), but slices are ordered by position where that reader uses
InstanceNumber. Only whitelisted header fields reach ``.meta``; patient identifiers never do.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from monai.data import ImageReader, MetaTensor
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import apply_rescale
from pydicom.valuerep import IS, TM, DSfloat

from pipeline.errors import InputError, one_line
from pipeline.io.discovery import SeriesInfo, missing_decoder, multi_frame, scan_series
from pipeline.io.headers import (
    SUV_SERIES_TAGS,
    header_number,
    pixel_spacing,
    read_dicom,
    slice_normal,
    slice_position,
    undated_moment,
)
from pipeline.io.patient_space import LPS_TO_RAS, voxel_size_problem
from pipeline.io.volume_fill import BLOCK_SLICES, VolumeFill

# A discovered series, a folder holding one series, one file, or a list of files.
SeriesSource = SeriesInfo | str | os.PathLike[str] | Sequence[str | os.PathLike[str]]

logger = logging.getLogger(__name__)

# Series-level header fields copied into meta besides SUV's (_suv_fields: sex and size only as inputs of the
# lean-body-mass, ideal-weight and surface-area normalisations; never reported): identity and timing.
SERIES_TAGS = (
    "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "SeriesDescription", "Manufacturer",
    "StudyDate", "SeriesDate", "SeriesTime", "CorrectedImage",
)
# Per-slice PET fields SUV needs (meta["pet_slices"], in slice order): timing, and Philips' private factors
# from counts to SUVbw or to Bq/ml; plus the vendors' private decay-correction reference datetimes.
PET_SLICE_TAGS = {"FrameReferenceTime": "FrameReferenceTime", "ActualFrameDuration": "ActualFrameDuration",
                  "PhilipsSUVScale": 0x70531000, "PhilipsActivityScale": 0x70531009}
PRIVATE_DECAY_TAGS = {"GEDecayDateTime": 0x0009100D, "SiemensDecayDateTime": 0x00711022}
RADIOPHARMACEUTICAL_TAGS = (
    "Radiopharmaceutical", "RadionuclideTotalDose", "RadionuclideHalfLife",
    "RadiopharmaceuticalStartTime", "RadiopharmaceuticalStartDateTime",
)
_ORIENTATION_TOLERANCE = 1e-4
_IN_PLANE_TOLERANCE_MM = 0.05  # slice origins further off the normal through the first one: a tilted stack
_DUPLICATE_TOLERANCE_MM = 1e-3
_UNEVEN_TOLERANCE = 0.01  # relative deviation of a slice step from the median step
_GAP_FACTOR = 1.5  # a step this many times the median means missing slices
_OFF_GRID_FRACTION = 0.5  # of the mean step: how far a slice may lie from its place on the volume's even grid
_MAX_MATRIX = 8192  # Rows/Columns beyond this are a corrupt header, not an image (65535^2 floats: 16 GiB a slice)


@dataclass(frozen=True)
class _Slice:
    """What is kept of a slice once its pixels are in the volume: its header without the pixel data."""

    header: Dataset
    path: Path
    position: float
    acquisition: tuple[str, str] | None  # (AcquisitionDate, AcquisitionTime)
    pet: dict[str, object] | None  # PET slices: acquisition date and time, and PET_SLICE_TAGS


def _require(header: Dataset, keyword: str, path: Path) -> object:
    value = header.get(keyword)
    if value is None or value == "":
        modality = header.get("Modality", "unknown")
        raise InputError(f"{path}: missing {keyword}: not an image slice (Modality {modality}) or a truncated file")
    return value


def _slice_position(header: Dataset, path: Path) -> float:
    """Position along the slice normal (IOP cross product . IPP), after checking the slice geometry exists."""
    problem = multi_frame(header, path)
    if problem:
        raise InputError(problem)
    for keyword in ("Rows", "Columns", "PixelSpacing", "ImagePositionPatient", "ImageOrientationPatient"):
        _require(header, keyword, path)
    if max(int(header.Rows), int(header.Columns)) > _MAX_MATRIX:
        raise InputError(f"{path}: {header.Rows}x{header.Columns} pixels exceed the {_MAX_MATRIX}x{_MAX_MATRIX} "
                         "supported (corrupt Rows/Columns?)")
    pixel_spacing(header, path)
    header_number(header, "SliceThickness", path)  # copied into the fused series: a damaged one fails here
    return slice_position(header, path)


def _ordered_files(source: SeriesSource) -> list[Path]:
    """The caller's series (discovered, a folder, one file or a file list) as files in position order.

    Discovery already ordered a series by its headers; loose file lists get a header pass to order them.
    """
    if isinstance(source, SeriesInfo):
        return list(source.files)
    if isinstance(source, (str, os.PathLike)) and Path(source).is_dir():
        series, problems = scan_series(source)
        if problems and not series:  # what made every file unusable says more than "found 0"
            raise InputError(problems[0].reason)
        for problem in problems:
            logger.warning("skipping %s", problem)
        if len(series) != 1:
            raise InputError(f"{source}: expected one image series in the folder, found {len(series)}")
        return list(series[0].files)
    files = [Path(source)] if isinstance(source, (str, os.PathLike)) else [Path(f) for f in source]
    if not files:
        raise InputError("load_series: empty list of files")
    return sorted(files, key=lambda f: _slice_position(read_dicom(f), f)) if len(files) > 1 else files


def _check_matches(header: Dataset, path: Path, first: Dataset, first_path: Path) -> None:
    """A slice must continue the first one's stack: same series, orientation, matrix, spacing, no tilt; a PET slice
    the same SUV header, since SUV reads the first slice's for the series."""
    if header.get("SeriesInstanceUID") != first.get("SeriesInstanceUID"):
        raise InputError(f"{path}: belongs to another series than {first_path} (mixed series)")
    if not np.allclose(np.asarray(header.ImageOrientationPatient, float),
                       np.asarray(first.ImageOrientationPatient, float), atol=_ORIENTATION_TOLERANCE):
        raise InputError(f"{path}: ImageOrientationPatient differs from {first_path} (mixed orientations)")
    if (header.Rows, header.Columns) != (first.Rows, first.Columns):
        raise InputError(f"{path}: {header.Rows}x{header.Columns} pixels differ from "
                         f"{first_path}'s {first.Rows}x{first.Columns} (mixed Rows/Columns)")
    if not np.allclose(np.asarray(header.PixelSpacing, float), np.asarray(first.PixelSpacing, float)):
        raise InputError(f"{path}: PixelSpacing differs from {first_path} (mixed pixel spacing)")
    offset = np.asarray(header.ImagePositionPatient, float) - np.asarray(first.ImagePositionPatient, float)
    normal = slice_normal(first.ImageOrientationPatient)
    in_plane = float(np.linalg.norm(offset - (offset @ normal) * normal))
    if in_plane > _IN_PLANE_TOLERANCE_MM:
        raise InputError(f"{path}: slice origin is {in_plane:.2f} mm off the stack of {first_path} "
                         "(gantry tilt or sheared series, not supported)")
    if first.get("Modality") == "PT":
        theirs, ours = _suv_fields(header), _suv_fields(first)
        differ = next((key for key in {**ours, **theirs} if str(theirs.get(key)) != str(ours.get(key))), None)
        if differ:
            raise InputError(f"{path}: {differ} {theirs.get(differ)} differs from {first_path}'s {ours.get(differ)}: "
                             "SUV reads one series header (mixed PET headers)")


def _pixels(dataset: Dataset, path: Path) -> np.ndarray:
    """One slice's rescaled values as (rows, columns); every decoding failure becomes an InputError."""
    if "PixelData" not in dataset:
        raise InputError(f"{path}: no pixel data (Modality {dataset.get('Modality', 'unknown')})")
    try:
        pixels = dataset.pixel_array
    except Exception as exc:  # decoders raise many types on corrupt or truncated data
        reason = (missing_decoder(str(dataset.file_meta.get("TransferSyntaxUID", "")))
                  or f"cannot decode pixel data ({type(exc).__name__}: {one_line(exc)})")
        raise InputError(f"{path}: {reason}") from None
    if pixels.shape != (dataset.Rows, dataset.Columns):
        raise InputError(f"{path}: pixel data shape {pixels.shape} is not Rows x Columns")
    header_number(dataset, "RescaleIntercept", path)
    if header_number(dataset, "RescaleSlope", path) == 0:
        raise InputError(f"{path}: RescaleSlope 0 makes every pixel the same value")
    return apply_rescale(pixels, dataset)


def _fill(volume: VolumeFill, files: list[Path], first: Dataset) -> list[_Slice]:
    """Read, check and decode every slice into ``volume``, a block of slices at a time.

    Each file is read once here, and its header kept (pixel data dropped) for the writers of derived
    series, so they need not read it again. Writing one (rows, columns) slice into the last axis touches a new cache
    line per voxel; a block of slices written together fills whole cache lines, which halves the
    loading time of a large CT.
    """
    block = np.empty((min(BLOCK_SLICES, len(files)), int(first.Rows), int(first.Columns)), dtype=np.float32)
    slices = []
    for start in range(0, len(files), BLOCK_SLICES):
        chunk = files[start:start + BLOCK_SLICES]
        for offset, path in enumerate(chunk):
            dataset = first if start + offset == 0 else read_dicom(path, header_only=False)
            position = _slice_position(dataset, path)
            _check_matches(dataset, path, first, files[0])
            block[offset] = _pixels(dataset, path)
            acquisition = (str(dataset.get("AcquisitionDate", "")), str(dataset.AcquisitionTime)) \
                if dataset.get("AcquisitionTime") else None
            del dataset.PixelData  # and its decoded copy: the block holds the values now
            slices.append(_Slice(dataset, path, position, acquisition, _pet_slice(dataset, path, acquisition)))
        volume.put(block[:len(chunk)].transpose(2, 1, 0))
    return slices


def _pet_slice(dataset: Dataset, path: Path, acquisition: tuple[str, str] | None) -> dict[str, object] | None:
    """What per-slice SUV needs of a PET slice: its acquisition date and time, frame timing, Philips factors.

    Absent fields are left out rather than None, so the meta still collates in a MONAI DataLoader.
    """
    if dataset.get("Modality") != "PT":
        return None
    found: dict[str, object] = dict(zip(("AcquisitionDate", "AcquisitionTime"), acquisition or ()))
    for name, tag in PET_SLICE_TAGS.items():
        value = header_number(dataset, tag, path, name)
        if value is not None:
            found[name] = value
    return found


def _spacing_report(slices: list[_Slice], first: Dataset) -> dict[str, float | int | bool]:
    """Describe the slice steps; raise on duplicates, gaps and slices off the even grid, warn on uneven spacing."""
    positions = np.array([s.position for s in slices])
    steps = np.diff(positions)
    for index in np.flatnonzero(steps < _DUPLICATE_TOLERANCE_MM):
        earlier, later = slices[index], slices[index + 1]
        raise InputError(f"{later.path}: duplicate slice position {later.position:.3f} mm "
                         f"(same as {earlier.path})")
    if len(slices) == 1:
        thickness = next(filter(None, (header_number(first, keyword, slices[0].path)
                                       for keyword in ("SpacingBetweenSlices", "SliceThickness"))), 1.0)
        _check_step(thickness, slices[0].path.parent)
        return {"n_slices": 1, "step_mm": thickness, "min_step_mm": thickness, "max_step_mm": thickness,
                "uneven": False}
    median = float(np.median(steps))
    gaps = np.flatnonzero(steps > _GAP_FACTOR * median)
    if gaps.size:
        index = gaps[0]
        raise InputError(f"{slices[index + 1].path}: {steps[index]:.2f} mm from the previous slice "
                         f"{slices[index].path}, over {_GAP_FACTOR} x the {median:.2f} mm step: "
                         f"missing slices ({gaps.size} gap(s) in the series)")
    uneven = bool(np.any(np.abs(steps - median) > _UNEVEN_TOLERANCE * median))
    report = {"n_slices": len(slices), "step_mm": float((positions[-1] - positions[0]) / (len(slices) - 1)),
              "min_step_mm": float(steps.min()), "max_step_mm": float(steps.max()),
              "uneven": uneven}
    _check_step(report["step_mm"], slices[0].path.parent)
    # The volume puts slice i at first + i x mean step; one further than half a step from there would show its
    # pixels (and the PET sampled for them) at another slice's place.
    off_grid = np.abs(positions - (positions[0] + report["step_mm"] * np.arange(len(slices))))
    worst = int(np.argmax(off_grid))
    if off_grid[worst] > _OFF_GRID_FRACTION * report["step_mm"]:
        raise InputError(f"{slices[worst].path}: {off_grid[worst]:.2f} mm from its place on the series' even "
                         f"{report['step_mm']:.2f} mm grid (steps {report['min_step_mm']:.2f}-"
                         f"{report['max_step_mm']:.2f} mm): resample the series to even spacing first")
    if uneven:
        logger.warning("%s: uneven slice spacing %.3f-%.3f mm (median %.3f); volume uses the mean step %.3f mm",
                       slices[0].path.parent, report["min_step_mm"], report["max_step_mm"], median,
                       report["step_mm"])
    return report


def _check_step(step_mm: float, folder: Path) -> None:
    """Slices a scanner's voxel apart: a step of metres (or of a micron) is a damaged position or thickness."""
    problem = voxel_size_problem([step_mm], ["slice step"])
    if problem:
        raise InputError(f"{folder}: {problem}")


def _affine(first: Dataset, step_mm: float) -> np.ndarray:
    """Voxel (column, row, slice) -> RAS mm, built from IPP/IOP/PixelSpacing and the slice step."""
    orientation = np.asarray(first.ImageOrientationPatient, float)
    row_spacing, column_spacing = (float(v) for v in first.PixelSpacing)
    affine = np.eye(4)
    affine[:3, 0] = orientation[:3] * column_spacing
    affine[:3, 1] = orientation[3:] * row_spacing
    affine[:3, 2] = slice_normal(orientation) * step_mm
    affine[:3, 3] = np.asarray(first.ImagePositionPatient, float)
    return LPS_TO_RAS @ affine


def _meta_value(value: object) -> object:
    """Header values as plain Python types (strings for dates/times) so meta collates and serialises."""
    if isinstance(value, MultiValue):
        return "\\".join(str(v) for v in value)
    if isinstance(value, (DSfloat, IS, float, int)):
        return float(value)
    if isinstance(value, bytes):  # a private tag read as UN (no private creator to give its VR)
        return value.decode("ascii", "replace").strip(" \x00")
    return str(value)


def _series_meta(first: Dataset, slices: list[_Slice]) -> dict[str, object]:
    """The whitelisted series fields, the earliest acquisition, the PET slices' SUV fields."""
    meta: dict[str, object] = {"modality": str(first.get("Modality", ""))}
    meta.update({k: _meta_value(first.get(k)) for k in SERIES_TAGS if first.get(k) not in (None, "")})
    meta.update(_suv_fields(first))
    acquisitions = [s.acquisition for s in slices if s.acquisition]
    if acquisitions:
        earliest = min(acquisitions)  # undated ones sort first: undated if any is
        series_time = str(first.get("SeriesTime") or "")
        if series_time and not earliest[0]:  # times of day: ordered around SeriesTime (midnight), as in SUV
            try:
                earliest = min(acquisitions, key=lambda a: undated_moment(TM(a[1]), TM(series_time)))
            except ValueError:  # a malformed time: SUV, which reads it, names it
                pass
        meta["AcquisitionDate"], meta["AcquisitionTime"] = earliest
    if first.get("Modality") == "PT":
        meta["pet_slices"] = [s.pet for s in slices]
        for name, tag in PRIVATE_DECAY_TAGS.items():
            if first.get(tag) is not None and first[tag].value:
                meta[name] = _meta_value(first[tag].value)
    return meta


def _suv_fields(header: Dataset) -> dict[str, object]:
    """The series-level fields SUV reads of a PET slice (:data:`SUV_SERIES_TAGS` and the dose's), as meta holds them."""
    fields = {k: _meta_value(header.get(k)) for k in SUV_SERIES_TAGS if header.get(k) not in (None, "")}
    radiopharmaceutical = header.get("RadiopharmaceuticalInformationSequence")
    if radiopharmaceutical:
        item = radiopharmaceutical[0]
        fields.update({k: _meta_value(item.get(k)) for k in RADIOPHARMACEUTICAL_TAGS if item.get(k) not in (None, "")})
    return fields


def read_series(source: SeriesSource) -> tuple[MetaTensor, list[Dataset]]:
    """:func:`load_series`, and the slices' headers in volume order (pixel data dropped).

    The headers carry patient identifiers, so they travel beside the volume, never in its ``meta``.
    """
    files = _ordered_files(source)
    first = read_dicom(files[0], header_only=False)
    _slice_position(first, files[0])
    filled = VolumeFill((int(first.Columns), int(first.Rows), len(files)), str(first.get("Modality", "")))
    slices = _fill(filled, files, first)
    volume = filled.voxels
    spacing_report = _spacing_report(slices, first)
    affine = _affine(first, float(spacing_report["step_mm"]))
    meta = _series_meta(first, slices)
    meta.update({
        "filename_or_obj": str(Path(os.path.commonpath([str(f.parent) for f in files]))),
        "spacing_report": spacing_report,
        "original_affine": affine,
        "spatial_shape": np.array(volume.shape[1:]),
        "space": "RAS",
        "original_channel_dim": float("nan"),
    })
    return MetaTensor(volume, affine=torch.as_tensor(affine, dtype=torch.float64), meta=meta), [s.header for s in slices]


def load_series(source: SeriesSource) -> MetaTensor:
    """Read one DICOM series into a ``(1, X, Y, Z)`` MetaTensor with a RAS affine: float32, int16 for a CT of whole HU.

    ``source`` is a discovered series, a folder holding exactly one series, one file, or a list of files.
    Raises InputError (one line, naming the file) for anything that does not form one regular stack.
    """
    return read_series(source)[0]


class DicomSeriesReader(ImageReader):
    """MONAI ``ImageReader`` for one DICOM series, so a config can write ``LoadImaged(reader=...)``.

    Reads with :func:`load_series` (position order, per-slice rescale, regular-stack checks, the
    whitelisted header fields): MONAI's ``PydicomReader`` orders by InstanceNumber and keeps every tag,
    patient identifiers included. ``LoadImage(..., ensure_channel_first=True)`` gives the ``(1, X, Y, Z)``
    RAS volume :func:`load_series` returns. A series that does not load raises :class:`InputError`;
    MONAI's ``LoadImage`` reports it inside its own "cannot find a suitable reader" error.
    """

    def verify_suffix(self, filename: Sequence[str | os.PathLike[str]] | str | os.PathLike[str]) -> bool:
        """A folder of DICOM files, or DICOM files (``.dcm`` or no suffix, as PACS exports name them)."""
        paths = [Path(name) for name in ((filename,) if isinstance(filename, (str, os.PathLike)) else filename)]
        return bool(paths) and all(path.is_dir() or path.suffix.lower() in ("", ".dcm") for path in paths)

    def read(self, data: Sequence[str | os.PathLike[str]] | str | os.PathLike[str], **kwargs: object) -> MetaTensor:
        """The series in ``data``: a folder (LoadImage passes it as a 1-tuple) or its files."""
        sources = (data,) if isinstance(data, (str, os.PathLike)) else tuple(data)
        return load_series(sources[0] if len(sources) == 1 else sources)

    def get_data(self, img: MetaTensor) -> tuple[np.ndarray, dict]:
        """The ``(X, Y, Z)`` voxels and the meta, with the affine MONAI's loader expects under ``affine``."""
        meta = {**img.meta, "affine": img.affine.numpy()}
        return img.as_tensor()[0].numpy(), meta
