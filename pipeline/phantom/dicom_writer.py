"""Writing the phantom's CT and PET as DICOM Part-10 series with pydicom.

Each series is one header template, filled per slice with its position, rescale and pixels and
written atomically. The headers carry what a real PET/CT reader needs: patient geometry (LPS,
identity orientation), body-weight SUV fields, radiopharmaceutical timing. Every date and time
comes from the caller and every UID is derived from a seed string, so the files are
byte-identical from one run to the next.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, PositronEmissionTomographyImageStorage, generate_uid
from pydicom.valuerep import DSfloat

from pipeline.io.headers import write_dicom
from pipeline.phantom.grid import Grid
from pipeline.phantom.injection import Injection
from pipeline.phantom.rescale import StoredVolume

MANUFACTURER = "DCIF phantom"


@dataclass(frozen=True)
class StudyHeader:
    """What both series share: identity of the (synthetic) patient and study, and the frame of reference."""

    uid_seed: str
    patient_id: str
    patient_weight_kg: float
    study_start: datetime

    def uid(self, *parts: str) -> str:
        """A UID that depends only on the study's seed string and ``parts``: reproducible, unique per study."""
        return generate_uid(entropy_srcs=[self.uid_seed, *parts])


@dataclass(frozen=True)
class SeriesHeader:
    """One series: its name (file prefix, UID source), number, description, start time, window (centre, width)."""

    name: str
    series_number: int
    description: str
    start: datetime
    window: tuple[float, float]


def write_ct_series(
    folder: Path, volume: StoredVolume, grid: Grid, study: StudyHeader, series: SeriesHeader,
    on_slice: Callable[[], object],
) -> None:
    """CT Image Storage series, stored HU with intercept from ``volume``."""
    template = _template(study, series, grid, CTImageStorage, "CT")
    template.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    template.KVP = "120"
    template.ConvolutionKernel = "STANDARD"
    template.RescaleType = "HU"
    _write_series(folder, series.name, volume, grid, template, on_slice, lambda ds, k: None)


def bed_positions(z_mm: np.ndarray, bed_mm: float, overlap_mm: float) -> np.ndarray:
    """Bed index of each slice of a head-first multi-bed scan merged into one series.

    Beds ``bed_mm`` long, each overlapping the previous by ``overlap_mm``, from the highest slice down; a
    slice in an overlap belongs to the bed whose centre is nearer, as scanners merge them.
    """
    step = bed_mm - overlap_mm
    top = float(z_mm.max())
    n_beds = max(1, int(np.ceil((top - float(z_mm.min()) - overlap_mm) / step)))
    centres = top - bed_mm / 2 - step * np.arange(n_beds)
    return np.abs(z_mm[:, None] - centres[None, :]).argmin(axis=1)


def write_pet_series(
    folder: Path, volume: StoredVolume, grid: Grid, study: StudyHeader, series: SeriesHeader,
    injection: Injection, on_slice: Callable[[], object], beds: np.ndarray | None = None,
) -> None:
    """PET Image Storage series in Bq/ml, decay-corrected to the series start, with the SUV headers.

    ``beds`` (a bed index per slice, see :func:`bed_positions`) gives each slice its bed's
    acquisition time and frame reference time, as a merged multi-bed series carries them.
    """
    template = _template(study, series, grid, PositronEmissionTomographyImageStorage, "PT")
    template.ImageType = ["ORIGINAL", "PRIMARY"]
    template.SeriesType = ["WHOLE BODY", "IMAGE"]
    template.Units = "BQML"
    template.RescaleType = "BQML"
    template.CountsSource = "EMISSION"
    template.DecayCorrection = "START"
    template.DecayFactor = "1.0"
    template.FrameReferenceTime = "0.0"
    template.ActualFrameDuration = 120000  # ms per bed position
    template.CorrectedImage = ["DECY", "ATTN", "SCAT", "DTIM", "RAN", "NORM"]
    template.AttenuationCorrectionMethod = "CT-based"
    template.ReconstructionMethod = "OSEM"
    template.SUVType = "BW"
    template.NumberOfSlices = grid.shape[2]
    template.NumberOfTimeSlices = 1
    template.RadiopharmaceuticalInformationSequence = [_radiopharmaceutical(injection)]
    frame_s = template.ActualFrameDuration / 1000.0
    beds = np.zeros(grid.shape[2], dtype=int) if beds is None else beds

    def per_slice(ds: Dataset, k: int) -> None:
        ds.ImageIndex = k + 1  # the PET Image module requires it
        start = series.start + timedelta(seconds=float(beds[k]) * frame_s)
        ds.AcquisitionDate, ds.AcquisitionTime = _da(start), _tm(start)
        ds.FrameReferenceTime = _ds(1000.0 * (float(beds[k]) * frame_s + frame_s / 2))

    _write_series(folder, series.name, volume, grid, template, on_slice, per_slice)


def _radiopharmaceutical(injection: Injection) -> Dataset:
    """The FDG item: what, how much, when, and the nuclide's half-life (all SUV needs)."""
    item = Dataset()
    item.Radiopharmaceutical = "Fluorodeoxyglucose"
    item.RadiopharmaceuticalStartTime = _tm(injection.injected_at)
    item.RadiopharmaceuticalStartDateTime = injection.injected_at.strftime("%Y%m%d%H%M%S.%f")
    item.RadionuclideTotalDose = _ds(injection.dose_bq)
    item.RadionuclideHalfLife = _ds(injection.half_life_s)
    item.RadionuclidePositronFraction = "0.9673"
    nuclide = Dataset()
    nuclide.CodeValue = "C-111A1"
    nuclide.CodingSchemeDesignator = "SRT"
    nuclide.CodeMeaning = "^18^Fluorine"
    item.RadionuclideCodeSequence = [nuclide]
    return item


def _template(study: StudyHeader, series: SeriesHeader, grid: Grid, sop_class: str, modality: str) -> Dataset:
    """Header elements common to the CT and PET series; per-slice ones are filled while writing."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.Modality = modality
    ds.Manufacturer = MANUFACTURER
    ds.ManufacturerModelName = "synthetic thorax"
    ds.BodyPartExamined = "CHEST"
    ds.PatientName = "PHANTOM^THORAX"
    ds.PatientID = study.patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = "M"
    ds.PatientAge = "060Y"
    ds.PatientWeight = _ds(study.patient_weight_kg)
    ds.PatientSize = "1.75"
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = study.uid("study")
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "Synthetic thorax PET/CT phantom"
    ds.StudyDate, ds.StudyTime = _da(study.study_start), _tm(study.study_start)
    ds.SeriesInstanceUID = study.uid("series", series.name)
    ds.SeriesNumber = series.series_number
    ds.SeriesDescription = series.description
    for prefix in ("Series", "Acquisition", "Content"):
        setattr(ds, f"{prefix}Date", _da(series.start))
        setattr(ds, f"{prefix}Time", _tm(series.start))
    ds.FrameOfReferenceUID = study.uid("frame-of-reference")
    ds.PositionReferenceIndicator = ""
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [_ds(grid.spacing[1]), _ds(grid.spacing[0])]  # row spacing (y), column spacing (x)
    ds.SliceThickness = _ds(grid.spacing[2])
    ds.SpacingBetweenSlices = _ds(grid.spacing[2])
    ds.Columns, ds.Rows = grid.shape[0], grid.shape[1]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 1
    ds.WindowCenter, ds.WindowWidth = _ds(series.window[0]), _ds(series.window[1])
    return ds


def _write_series(
    folder: Path, prefix: str, volume: StoredVolume, grid: Grid, template: Dataset, on_slice: Callable[[], object],
    per_slice: Callable[[Dataset, int], None],
) -> None:
    """One file per slice, ``<prefix>_0000.dcm`` upwards in z; leftovers of a longer earlier run are removed.

    ``per_slice(ds, k)`` sets what differs per slice beyond geometry and rescale."""
    folder.mkdir(parents=True, exist_ok=True)
    written = set()
    ds = template
    for k, z in enumerate(grid.axis(2)):
        ds.SOPInstanceUID = generate_uid(entropy_srcs=[ds.SeriesInstanceUID, str(k)])
        ds.InstanceNumber = k + 1
        per_slice(ds, k)
        ds.ImagePositionPatient = [_ds(grid.origin[0]), _ds(grid.origin[1]), _ds(z)]
        ds.SliceLocation = _ds(z)
        ds.RescaleIntercept = _ds(volume.intercept)
        ds.RescaleSlope = _ds(volume.slopes[k])
        # DICOM stores row by row (y): the transposed (x, y) slice, contiguous for a Fortran-order volume.
        ds.PixelData = np.ascontiguousarray(volume.pixels[:, :, k].T, dtype="<i2").tobytes()
        path = folder / f"{prefix}_{k:04d}.dcm"
        write_dicom(ds, path)
        written.add(path.name)
        on_slice()
    for stale in folder.glob(f"{prefix}_*.dcm"):
        if stale.name not in written:
            stale.unlink()


def _ds(value: float) -> DSfloat:
    """A decimal string that fits DICOM's 16 characters."""
    return DSfloat(float(value), auto_format=True)


def _da(moment: datetime) -> str:
    return moment.strftime("%Y%m%d")


def _tm(moment: datetime) -> str:
    return moment.strftime("%H%M%S.%f")
