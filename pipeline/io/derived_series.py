"""Write a fused volume as a derived DICOM object that a PACS files in the CT's study and no tool takes for a CT.

SOP class: Multi-frame Grayscale Word Secondary Capture (grey fused images) and Multi-frame True
Color Secondary Capture (the colour rendering), Modality ``OT``, one multi-frame object per series.
Why: CT Image Storage requires Modality ``CT``, so a QIDO query or a router for CT returned the
fused series beside the real CT and HU presets applied to it. Single-frame Secondary Capture has
no Frame of Reference nor Image Plane module (adding them makes a "Standard Extended" object that
dciodvfy warns about). The multi-frame SC IODs include Frame of Reference and Multi-frame
Functional Groups, so each frame carries its CT slice's position, orientation and spacing: viewers
that link series by frame of reference hang and scroll it with the CT, and SimpleITK (GDCM) rebuilds
the CT's grid from the one file.

Provenance: the CT and PET slices are Source Images (purpose: source image for image processing
operation), both series are in the Referenced Series Sequence, the Derivation Code Sequence says
image processing, Software Versions hold the product and model version, and the series and content
dates/times are those of the fusion, in the source's time zone when it gives one. Every UID is derived
from the source instances (:func:`source_digest`: series, SOP instances and slice positions), method,
window, model version, SUV ceiling and product version: whenever the pixels may change, the UIDs do,
so a PACS stores a new model's images, or those of a study exported again with other slices, instead
of answering "already stored" and keeping the stale ones.

Patient and study: the object joins the CT's patient and study, so it carries every element of their
modules (Patient, Clinical Trial Subject, General Study, Patient Study, Clinical Trial Study) exactly as
the CT has them, sequences included; a PACS refuses or merges wrongly an object whose Patient ID,
issuer or birth date differ from those of the study it is filed in. Type 2 elements of the IOD's
modules the source lacks are written empty, as the IOD asks.

Grey pixels are unsigned 12-bit integers, ``stored = round(fused * 4095)`` (unit-less).
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import struct
from collections.abc import Iterable, Sequence
from contextlib import ExitStack
from copy import deepcopy
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
from highdicom._standard_utils import get_iod_module_map, get_module_attribute_map, get_sop_class_iod_map
from monai.data import MetaTensor
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import UID, generate_uid

from pipeline.errors import InputError
from pipeline.io.atomic import atomic_write
from pipeline.io.headers import save_dicom, slice_position
from pipeline.provenance import SOFTWARE_VERSION

FUSED_SERIES_NUMBER = 9000
COLOUR_SERIES_OFFSET = 100  # the colour rendering of grey series 9000 + i is series 9100 + i
MAX_STORED = 4095  # 12 bits stored: the range every viewer handles
MANUFACTURER = "DCIF-GAN fusion (dcif-fusion)"
FUSED_MODALITY = "OT"
GREY_SOP_CLASS = UID("1.2.840.10008.5.1.4.1.1.7.3")  # Multi-frame Grayscale Word Secondary Capture Image Storage
COLOUR_SOP_CLASS = UID("1.2.840.10008.5.1.4.1.1.7.4")  # Multi-frame True Color Secondary Capture Image Storage
FUSED_FILE = "fused.dcm"
MAX_PIXEL_BYTES = 0xFFFFFFFE  # the largest even value of a 32-bit element length (0xFFFFFFFF means "undefined")

# The information entities whose modules are copied from the CT whole: the object is filed in its patient and study.
_SOURCE_ENTITIES = ("Patient", "Study")
# Other elements of the CT copied verbatim: the character set its copied text is in, its frame of reference, and
# how the body lay and which part it is (the fused slices are the CT's).
_CT_TAGS = ("SpecificCharacterSet", "FrameOfReferenceUID", "PositionReferenceIndicator", "PatientPosition",
            "BodyPartExamined")
_TIMEZONE_OFFSET = re.compile(r"([+-])(\d\d)([0-5]\d)")  # TimezoneOffsetFromUTC, "&ZZXX" (PS3.3 C.12.1.1.8)
_MAX_TIMEZONE_OFFSET = timedelta(hours=14)  # no zone is further from UTC (Line Islands, +14:00)
# BodyPartExamined terms of paired structures (as dciodvfy reads PS3.16 Annex L): a series of one needs Laterality
# (PS3.3 C.7.3.1, type 2C), as does one that does not say what it shows; a series of another must not have it.
PAIRED_BODY_PARTS = frozenset("""
    ADRENAL ANKLE ARM AXILLA BREAST BRONCHUS BUTTOCK CALCANEUS CALF CAROTID CLAVICLE CORNEA EAR ELBOW EXTREMITY EYE
    EYELID FEMUR FINGER FOOT FOREARM HAND HIP HUMERUS IAC KIDNEY KNEE LEG LUNG ORBIT OVARY PAROTID PATELLA RIB
    SCLAVICLE SCAPULA SCLERA SCROTUM SHOULDER SUBMANDIBULAR TMJ TESTIS THIGH THUMB TIBIA TOE ULNA WRIST ZYGOMA
""".split())


@dataclass(frozen=True)
class Provenance:
    """What made one fused volume: the facts its UIDs and provenance elements are built from."""

    method: str
    window: str
    model_version: str  # pipeline.provenance.fuser_version
    suv_max: float
    pet_scaling: str = "SUVbw"  # how the PET's pixels became SUV (a factor given by hand, a relative scaling...)
    suv_factor: str = ""  # the factor(s) that made them SUV: a weight or dose corrected in place changes them alone
    software_version: str = SOFTWARE_VERSION
    created: datetime = field(default_factory=lambda: datetime.now().astimezone())

    def identity(self) -> list[str]:
        """Everything the pixels depend on besides the source instances (:func:`source_digest`); not the creation
        time."""
        return [self.method, self.window, self.model_version, f"{self.suv_max:g}", self.pet_scaling, self.suv_factor,
                self.software_version]


def source_digest(series: Iterable[tuple[str, Iterable[str], Iterable[float]]]) -> str:
    """A digest of the series a study is fused from: each one's SeriesInstanceUID, SOPInstanceUIDs and slice positions
    (in position order). A study exported again with slices added, removed or replaced has another one, so its derived
    series get other UIDs and the batch redoes it (a hash, so no UID reaches the batch's report)."""
    digest = hashlib.sha256()
    for series_uid, instances, positions in series:
        digest.update(series_uid.encode())
        for instance in sorted(instances):
            digest.update(b"\0" + instance.encode())
        digest.update(repr([round(position, 3) for position in positions]).encode())
    return digest.hexdigest()[:16]


def dicom_folder_name(method: str, window: str) -> str:
    """Folder of one derived DICOM series, beside the NIfTI of the same method and window."""
    return f"dicom_{method}_{window}"


def colour_folder_name(method: str, window: str) -> str:
    """Folder of the colour rendering (PET on the fused image) of one method and window."""
    return f"colour_{method}_{window}"


def fused_series_description(method: str, window: str, colour: bool = False) -> str:
    """What a radiologist sees in the series list: the method, the CT window, colour or not."""
    return f"DCIF fusion {method} {window}{' PET colour' if colour else ''}"


def _source(header: Dataset) -> str:
    """How an error names a CT header: its file, else (a header handed over in memory) its instance."""
    return getattr(header, "filename", None) or f"CT slice {header.get('SOPInstanceUID', '')}"


def _position(header: Dataset) -> float:
    return slice_position(header, _source(header))


def _headers_digest(*series: Sequence[Dataset]) -> str:
    """:func:`source_digest` of the slices' headers, one sequence per series (an empty one is left out)."""
    return source_digest((headers[0].SeriesInstanceUID, [header.SOPInstanceUID for header in headers],
                          sorted(map(_position, headers))) for headers in series if headers)


@functools.cache
def _modules(sop_class: str) -> tuple[tuple[str, bool, dict[str, str]], ...]:
    """Each module of the SOP class's IOD: its information entity, whether it is mandatory, and its top-level
    elements' types, from the standard's tables highdicom ships (private, hence highdicom's pinned version)."""
    attributes = get_module_attribute_map()
    return tuple((module["ie"], module["usage"] == "M",
                  {item["keyword"]: item["type"] for item in attributes[module["key"]] if not item["path"]})
                 for module in get_iod_module_map()[get_sop_class_iod_map()[sop_class]])


def _copy_source_elements(ds: Dataset, source: Dataset, sop_class: str) -> None:
    """Copy the source's patient and study modules whole and :data:`_CT_TAGS`, as they are (sequences too)."""
    keywords = [keyword for entity, _, elements in _modules(sop_class) if entity in _SOURCE_ENTITIES
                for keyword in elements]
    for keyword in (*keywords, *_CT_TAGS):
        if keyword in source:
            ds.add(deepcopy(source[keyword]))


def _add_empty_type_2(ds: Dataset, sop_class: str) -> None:
    """Write empty the type 2 elements the object lacks of each module it has: every mandatory one, and each other
    one it holds an element of (a source without PatientSex or StudyID gives them empty, as the IOD asks)."""
    held = set(ds.dir())
    written = [elements for _, mandatory, elements in _modules(sop_class) if mandatory or not held.isdisjoint(elements)]
    for elements in written:
        for keyword, kind in elements.items():
            if kind == "2" and keyword not in ds:
                setattr(ds, keyword, None)


def _source_zone(header: Dataset) -> timezone | None:
    """The zone the source's dates and times are in (its TimezoneOffsetFromUTC), None when it does not give a valid
    one."""
    match = _TIMEZONE_OFFSET.fullmatch(str(header.get("TimezoneOffsetFromUTC") or "").strip())
    if not match:
        return None
    sign, hours, minutes = match.groups()
    offset = timedelta(hours=int(hours), minutes=int(minutes))
    if offset > _MAX_TIMEZONE_OFFSET:
        return None
    return timezone(-offset if sign == "-" else offset)


def _ordered_headers(ct_headers: Sequence[Dataset], shape: tuple[int, int, int], where: str) -> list[Dataset]:
    """CT headers in the volume's slice order (by position), after checking they describe its ``(X, Y, Z)`` grid."""
    columns, rows, n_slices = shape
    if len(ct_headers) != n_slices:
        raise InputError(f"{where}: {n_slices} slices but {len(ct_headers)} CT headers to place them")
    for header in ct_headers:
        if (int(header.Rows), int(header.Columns)) != (rows, columns):
            raise InputError(f"{_source(header)}: {header.Rows}x{header.Columns} pixels, the fused volume has {rows}x{columns}")
    return sorted(ct_headers, key=_position)


def _item(**elements: object) -> Dataset:
    ds = Dataset()
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    return ds


def _code(code) -> Dataset:
    return _item(CodeValue=code.value, CodingSchemeDesignator=code.scheme_designator, CodeMeaning=code.meaning)


def _references(ct: Sequence[Dataset], pet: Sequence[Dataset]) -> tuple[list[Dataset], list[Dataset]]:
    """Source Image items for every CT and PET slice, and the Referenced Series items of both series."""
    purpose = _code(codes.DCM.SourceImageForImageProcessingOperation)
    sources, series = [], {}
    for header in [*ct, *pet]:
        instance = {"ReferencedSOPClassUID": header.SOPClassUID, "ReferencedSOPInstanceUID": header.SOPInstanceUID}
        sources.append(_item(**instance, PurposeOfReferenceCodeSequence=[purpose]))
        series.setdefault(header.SeriesInstanceUID, []).append(_item(**instance))
    return sources, [_item(SeriesInstanceUID=uid, ReferencedInstanceSequence=items) for uid, items in series.items()]


def _dataset(ordered: Sequence[Dataset], pet_headers: Sequence[Dataset], provenance: Provenance, colour: bool,
             series_number: int) -> Dataset:
    """Every element but the pixels: study, series, equipment, provenance and the per-frame geometry."""
    first = ordered[0]
    sop_class = COLOUR_SOP_CLASS if colour else GREY_SOP_CLASS
    ds = Dataset()
    _copy_source_elements(ds, first, sop_class)
    ds.PatientOrientation = None  # type 2C: the frames' orientation is in their functional groups
    if "BodyPartExamined" not in ds or str(ds.BodyPartExamined).upper() in PAIRED_BODY_PARTS:
        ds.Laterality = first.get("Laterality") or None  # type 2C: the CT's side, empty when unknown
    identity = [sop_class, _headers_digest(ordered, pet_headers), *provenance.identity()]
    ds.SOPClassUID = sop_class
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=["dcif-fused-series", *identity])
    ds.SOPInstanceUID = generate_uid(entropy_srcs=["dcif-fused-instance", *identity])
    ds.Modality = FUSED_MODALITY
    ds.SeriesNumber, ds.InstanceNumber = series_number, 1
    ds.SeriesDescription = fused_series_description(provenance.method, provenance.window, colour)
    zone = _source_zone(first)
    created = provenance.created.astimezone(zone)  # in the zone of the study's own dates and times, when it says
    if zone is not None:
        ds.TimezoneOffsetFromUTC = first.TimezoneOffsetFromUTC
    date, time = created.strftime("%Y%m%d"), created.strftime("%H%M%S")
    ds.SeriesDate = ds.ContentDate = ds.InstanceCreationDate = date
    ds.SeriesTime = ds.ContentTime = ds.InstanceCreationTime = time
    ds.Manufacturer = MANUFACTURER
    ds.SoftwareVersions = [provenance.software_version, f"model {provenance.model_version}"]
    ds.ConversionType = "WSD"  # workstation: made by software from other images
    ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
    ds.BurnedInAnnotation = "NO"
    ds.DerivationDescription = (
        f"PET/CT fusion by {provenance.method} ({provenance.model_version}) of the CT ({provenance.window} window) "
        f"and the PET ({provenance.pet_scaling}) at 0-{provenance.suv_max:g} resampled onto the CT grid"
        + ("; hot-iron PET over the grey fused image" if colour else f"; stored = round(fused * {MAX_STORED})"))
    ds.DerivationCodeSequence = [_code(codes.DCM.ImageProcessing)]
    ds.SourceImageSequence, ds.ReferencedSeriesSequence = _references(ordered, pet_headers)

    ds.NumberOfFrames = len(ordered)
    ds.FrameIncrementPointer = "SliceLocationVector"
    ds.SliceLocationVector = [round(_position(header), 4) for header in ordered]
    # SliceThickness is type 2 in a CT and exports drop it; the fused slices are then as thick as they are apart.
    steps = np.abs(np.diff(ds.SliceLocationVector))
    thickness = first.get("SliceThickness") or (f"{np.median(steps):.6g}" if steps.size else None)
    ds.SharedFunctionalGroupsSequence = [_item(
        PixelMeasuresSequence=[_item(PixelSpacing=first.PixelSpacing, SliceThickness=thickness)],
        PlaneOrientationSequence=[_item(ImageOrientationPatient=first.ImageOrientationPatient)],
    )]
    ds.PerFrameFunctionalGroupsSequence = [
        _item(PlanePositionSequence=[_item(ImagePositionPatient=header.ImagePositionPatient)]) for header in ordered]
    ds.Rows, ds.Columns = first.Rows, first.Columns
    if colour:
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    else:
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0", "1", "US"
        ds.PresentationLUTShape = "IDENTITY"
        ds.WindowCenter, ds.WindowWidth = str(MAX_STORED / 2), str(MAX_STORED + 1)
    ds.PixelRepresentation = 0
    _add_empty_type_2(ds, sop_class)
    return ds


def grey_frames(volume: np.ndarray) -> np.ndarray:
    """``(Z, rows, columns)`` stored values of an ``(X, Y, Z)`` fused volume or slab in [0, 1], contiguous.

    Scaled and rounded in one buffer, then cast and transposed in one pass (1.5x two casts and a transposing copy).
    """
    stored = np.clip(volume, 0.0, 1.0)
    stored *= MAX_STORED
    return np.ascontiguousarray(np.rint(stored, out=stored).transpose(2, 1, 0), dtype="<u2")


def _pixel_data_header(vr: str, length: int) -> bytes:
    """Pixel Data's tag, VR and length in explicit VR little endian (OB and OW: two reserved bytes, a 32-bit length)."""
    return struct.pack("<HH2sHI", 0x7FE0, 0x0010, vr.encode(), 0, length)


class DerivedSeriesWriter:
    """Write one derived series (``out_dir/fused.dcm``) frame by frame, so no volume of pixels is held.

    Every element but the pixels is known before the first frame, and Pixel Data is the dataset's last element: the
    file is begun with all of them and Pixel Data's header (its length is the frames' bytes), and each frame is
    appended as it comes. Once written, the frames are not copied again (a spool copied into the file at the end had
    written every byte twice, 2.5 s of a 512 x 512 x 300 study's four series). The file appears atomically on a clean
    exit with every frame written; on an exception nothing is left behind. Frames arrive in the volume's z order: the
    ``i``-th CT slice by position along the slice normal, as the DICOM loader orders them.

    Args:
        ct_headers, pet_headers: the source slices' headers (any order; pixel data not needed).
        shape: the ``(X, Y, Z)`` CT grid the frames lie on; InputError when the CT headers do not match it.
        colour: RGB frames (``(n, rows, columns, 3)`` uint8) instead of 12-bit grey (``(n, rows, columns)``).
    """

    def __init__(self, ct_headers: Sequence[Dataset], pet_headers: Sequence[Dataset], out_dir: str | os.PathLike[str],
                 provenance: Provenance, series_number: int, shape: tuple[int, int, int], colour: bool = False,
                 where: str = "fused volume") -> None:
        ordered = _ordered_headers(ct_headers, tuple(shape), where)
        self.dataset = _dataset(ordered, pet_headers, provenance, colour=colour, series_number=series_number)
        self.path = Path(out_dir) / FUSED_FILE
        self._frame = (int(self.dataset.Rows), int(self.dataset.Columns), *((3,) if colour else ()))
        self._dtype, self._vr = (np.uint8, "OB") if colour else (np.dtype("<u2"), "OW")
        self._frames = len(ordered)
        self._written = 0
        self._pixel_bytes = self._frames * int(np.prod(self._frame)) * np.dtype(self._dtype).itemsize
        if self._pixel_bytes > MAX_PIXEL_BYTES:
            raise InputError(f"{where}: {self._frames} frames of {'x'.join(map(str, self._frame))} are "
                             f"{self._pixel_bytes} bytes, more than one DICOM object holds ({MAX_PIXEL_BYTES})")

    def __enter__(self) -> DerivedSeriesWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._files = ExitStack()
        temporary = self._files.enter_context(atomic_write(self.path))
        self._file = self._files.enter_context(open(temporary, "wb"))
        save_dicom(self.dataset, self._file)
        self._file.write(_pixel_data_header(self._vr, self._pixel_bytes + self._pixel_bytes % 2))  # even, as DICOM asks
        return self

    def write(self, frames: np.ndarray) -> None:
        """Append the next frames, ``(n, rows, columns)`` grey or ``(n, rows, columns, 3)`` RGB."""
        if tuple(frames.shape[1:]) != self._frame or self._written + len(frames) > self._frames:
            raise ValueError(f"{self.path}: frames {frames.shape} do not continue {self._frames} frames of "
                             f"{self._frame} at frame {self._written}")
        self._file.write(np.ascontiguousarray(frames, dtype=self._dtype).data)
        self._written += len(frames)

    def __exit__(self, *exc: object) -> bool | None:
        if exc[0] is None:
            if self._written != self._frames:
                error = ValueError(f"{self.path}: {self._written} of {self._frames} frames written")
                self._files.__exit__(ValueError, error, None)
                raise error
            self._file.write(b"\0" * (self._pixel_bytes % 2))
        return self._files.__exit__(*exc)


def write_fused_series(
    volume: MetaTensor,
    ct_headers: Sequence[Dataset],
    pet_headers: Sequence[Dataset],
    out_dir: str | os.PathLike[str],
    provenance: Provenance,
    series_number: int = FUSED_SERIES_NUMBER,
) -> Path:
    """Write a whole ``(1, X, Y, Z)`` fused volume in [0, 1] with a :class:`DerivedSeriesWriter`."""
    where = str(volume.meta.get("filename_or_obj", "fused volume"))
    values = volume.detach().cpu().numpy()[0]
    with DerivedSeriesWriter(ct_headers, pet_headers, out_dir, provenance, series_number, values.shape,
                             where=where) as writer:
        writer.write(grey_frames(values))
    return writer.path


def write_colour_series(
    rgb: np.ndarray,
    ct_headers: Sequence[Dataset],
    pet_headers: Sequence[Dataset],
    out_dir: str | os.PathLike[str],
    provenance: Provenance,
    series_number: int = FUSED_SERIES_NUMBER + COLOUR_SERIES_OFFSET,
) -> Path:
    """Write a whole ``(Z, rows, columns, 3)`` uint8 RGB rendering with a :class:`DerivedSeriesWriter`."""
    frames, rows, columns, _ = rgb.shape
    with DerivedSeriesWriter(ct_headers, pet_headers, out_dir, provenance, series_number, (columns, rows, frames),
                             colour=True, where="colour rendering") as writer:
        writer.write(rgb)
    return writer.path
