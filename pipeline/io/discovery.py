"""Find PET/CT studies in an arbitrary folder tree and pick the PET/CT series pair of each.

Only headers are read (pixel data is skipped): about 2 ms a file, so thousands take seconds. Files
that cannot be read are recorded as problems rather than aborting the scan: a single broken file in
an archive must not hide every other study. Nothing here holds or prints patient identifiers.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from nibabel.orientations import io_orientation
from pydicom.dataset import Dataset
from pydicom.pixels import get_decoder
from pydicom.uid import UID, MediaStorageDirectoryStorage

from pipeline.errors import InputError, one_line
from pipeline.io.headers import SUV_SERIES_TAGS, read_dicom, slice_geometry, slice_normal, study_key

_SUV_HEADER = (*SUV_SERIES_TAGS, "RadiopharmaceuticalInformationSequence")
"""The header fields a PET's SUV is computed from, which :func:`_suv_header` digests."""

# The only header fields discovery decodes (pydicom still walks the others up to the pixel data).
DISCOVERY_TAGS = (
    "Modality",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "FrameOfReferenceUID",
    "SeriesDescription",
    "CorrectedImage",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "SOPInstanceUID",
    "ImageType",
    "Manufacturer",
    "NumberOfFrames",
    "ReferencedSeriesSequence",
    "SourceImageSequence",
    *_SUV_HEADER,
)
_MAX_PATH_BYTES = 4096  # PATH_MAX on Linux: longer paths cannot be opened
OUTPUT_MARK = ".location-key"
"""The file each of our output folders holds (the batch job's and the deploy app's key to their pseudonyms): a folder
holding it, reached by a link or copied into an input tree, is our own output, never read as input."""
PAIRED_MODALITIES = ("CT", "PT")
_NON_ATTENUATION_CORRECTED = re.compile(r"(?<![a-z])nac(?![a-z])|uncorrected|non[ _-]?corrected")
# CT series descriptions of the attenuation-correction CT (low dose, acquired with the PET in its position)
_ATTENUATION_CT = re.compile(r"(?<![a-z])(ctac|ac|ldct)(?![a-z])|atten|low[ _-]?dose")


def multi_frame(ds: Dataset, path: Path) -> str:
    """Why ``ds`` is no slice of a series because it holds several frames, in one line ("" for a single frame).

    Checked before any slice geometry: an Enhanced image keeps its geometry per frame, and was reported as a
    truncated file or a slice without position.
    """
    value = ds.get("NumberOfFrames")
    try:
        frames = int(value or 1)
    except (TypeError, ValueError):
        return f"{path}: NumberOfFrames {one_line(value)[:32]!r} is not a number"
    return f"{path}: multi-frame (Enhanced) images are not supported (NumberOfFrames {frames})" if frames > 1 else ""


def missing_decoder(transfer_syntax: str) -> str:
    """Why pixel data in ``transfer_syntax`` cannot be decoded here, naming what to install ("" when it can).

    pydicom's decoder registry knows which plugins (pylibjpeg, gdcm, ...) read each syntax and which are installed.
    """
    if not transfer_syntax:
        return ""
    uid = UID(transfer_syntax)
    syntax = f"{uid.name} ({uid})" if uid.name != uid else str(uid)
    try:
        decoder = get_decoder(uid)
    except NotImplementedError:
        return f"no decoder exists for transfer syntax {syntax}: convert the series to an uncompressed syntax"
    if decoder.is_available:
        return ""
    needs = ", or ".join(text.split(" - requires ")[1] for text in decoder.missing_dependencies
                         if " - requires " in text)
    return f"no decoder is installed for transfer syntax {syntax}: install {needs or 'a pydicom decoder plugin'}"


def nearest_patient_axes(directions: np.ndarray) -> np.ndarray:
    """For each array axis, a column of ``directions`` (any length or sign, LPS or RAS alike), the patient axis it lies
    nearest: 0 left-right, 1 front-back, 2 head-foot. nibabel's ``io_orientation`` assigns the three together, so an
    oblique stack gets one answer however its axes are scaled."""
    affine = np.eye(4)
    affine[:3, :3] = directions
    return io_orientation(affine)[:, 0].astype(int)


def not_axial(directions: np.ndarray, modality: str) -> str:
    """Why a DICOM series whose array axes run along ``directions`` (row, column, slice) is not fused, in one line
    ("" when its slices are axial: axis 2 lies nearest the head-foot axis).

    The one rule for discovery, which fails such a study up front, and the loader, which refuses such a DICOM series
    and restacks such a NIfTI (:func:`pipeline.transforms.loading.axial_last` says why a series is not restacked).
    """
    if nearest_patient_axes(directions)[2] == 2:
        return ""
    slice_axis = directions[:, 2] / np.linalg.norm(directions[:, 2])
    angle = np.degrees(np.arccos(min(1.0, abs(slice_axis[2]))))
    return (f"the {modality}'s slices are not axial (their normal is {angle:.0f} degrees from the head-foot axis): "
            f"coronal and sagittal {modality} series are not supported, give an axial reconstruction")


@dataclass(frozen=True)
class FileProblem:
    """A file that could not be used, with a one-line reason."""

    path: Path
    reason: str

    def __str__(self) -> str:
        return self.reason


@dataclass(frozen=True)
class SeriesInfo:
    """One image series found on disk: its identity, geometry summary and slice files in position order."""

    series_uid: str
    study_uid: str = field(repr=False)
    modality: str
    frame_of_reference_uid: str = field(repr=False)
    description: str
    corrected_image: tuple[str, ...] = field(repr=False)
    orientation: tuple[float, ...] = field(repr=False)  # ImageOrientationPatient: row, then column direction
    positions: tuple[float, ...] = field(repr=False)
    files: tuple[Path, ...] = field(repr=False)
    duplicates: int = 0  # further copies of the series' instances (same SOPInstanceUID), not used
    derived: str = ""  # why the series is not an original acquisition (empty when it is)
    references: frozenset[str] = field(default=frozenset(), repr=False)  # series/instance UIDs it derives from
    instances: frozenset[str] = field(default=frozenset(), repr=False)  # its SOPInstanceUIDs
    transfer_syntaxes: frozenset[str] = field(default=frozenset(), repr=False)  # how its files' pixels are encoded
    suv_header: str = field(default="", repr=False)  # a digest of the SUV fields of its first file (see _suv_header)

    @property
    def n_slices(self) -> int:
        return len(self.files)

    @property
    def folder(self) -> Path:
        """Deepest folder holding all of the series' files (names the series in messages)."""
        return Path(os.path.commonpath([str(f.parent) for f in self.files]))

    @property
    def normal(self) -> tuple[float, float, float]:
        """Unit normal of its slices (row direction x column direction)."""
        return tuple(float(v) for v in slice_normal(self.orientation))

    @property
    def refused(self) -> str:
        """Why the loader refuses this series, in one line without its folder ("" when it reads it): slices that are
        not axial, or pixels in a transfer syntax no installed decoder reads."""
        directions = np.column_stack([self.orientation[:3], self.orientation[3:], self.normal])
        return not_axial(directions, self.modality) or next(
            filter(None, map(missing_decoder, sorted(self.transfer_syntaxes))), "")

    @property
    def is_attenuation_corrected(self) -> bool:
        """CorrectedImage decides when present; otherwise the description must not say NAC/uncorrected."""
        if self.corrected_image:
            return "ATTN" in self.corrected_image
        return not _NON_ATTENUATION_CORRECTED.search(self.description.lower())

    @property
    def is_attenuation_ct(self) -> bool:
        """A CT whose description names it the attenuation-correction (low-dose) CT."""
        return bool(_ATTENUATION_CT.search(self.description.lower()))

    def derives_from(self, other: SeriesInfo) -> bool:
        """Whether this series references ``other`` (its series UID or one of its instances)."""
        return other.series_uid in self.references or not self.references.isdisjoint(other.instances)

    def overlap_mm(self, other: SeriesInfo) -> float:
        """Length of the overlap of the two series' slice ranges, measured along this series' normal."""
        lo, hi = min(self.positions), max(self.positions)
        other_lo, other_hi = other.span_along(self.normal)
        return max(0.0, min(hi, other_hi) - max(lo, other_lo))

    def span_along(self, normal: tuple[float, float, float]) -> tuple[float, float]:
        """Range of this series' slice origins projected onto another normal."""
        scale = float(np.dot(self.normal, normal))  # positions lie along this series' normal
        ends = (self.positions[0] * scale, self.positions[-1] * scale)
        return min(ends), max(ends)


@dataclass(frozen=True)
class StudyPair:
    """The CT and PET series chosen to be fused for one study."""

    study_uid: str = field(repr=False)
    ct: SeriesInfo
    pet: SeriesInfo

    @property
    def study_key(self) -> str:
        return study_key(self.study_uid)

    @property
    def ct_slices_without_pet(self) -> int:
        """CT slices outside the PET's axial extent (its outer slice faces): a shorter or z-shifted PET."""
        low, high = self.pet.span_along(self.ct.normal)
        half = (high - low) / (2 * (self.pet.n_slices - 1)) if self.pet.n_slices > 1 else 0.0
        return sum(1 for z in self.ct.positions if z < low - half or z > high + half)

    def __str__(self) -> str:
        missing = self.ct_slices_without_pet
        return (f"study {self.study_key}: CT {self.ct.n_slices} slices in {self.ct.folder}, "
                f"PET {self.pet.n_slices} slices in {self.pet.folder}"
                + (f"; {missing} CT slices without PET (left blank, not scored)" if missing else ""))


@dataclass(frozen=True)
class StudyFailure:
    """A study that cannot be fused, with a one-line reason naming where it lies."""

    location: Path
    reason: str
    key: str = ""  # the study's key where the failure is one study's (the batch report's key column)

    def __str__(self) -> str:
        return f"{self.location}: {self.reason}"


class IgnoredSeries(StudyFailure):
    """A series discovery will not fuse (e.g. a derived CT such as our own fused output), and why."""


@dataclass(frozen=True)
class DiscoveryResult:
    """What a scan found: fusable pairs, studies that failed, files that could not be read, series ignored."""

    pairs: list[StudyPair]
    failures: list[StudyFailure]
    problems: list[FileProblem]
    ignored: list[IgnoredSeries] = field(default_factory=list)


@dataclass(frozen=True)
class NiftiPair:
    """A CT/PET pair given as NIfTI files (already RAS-oriented volumes, no DICOM headers)."""

    ct: Path
    pet: Path

    @property
    def study_key(self) -> str:
        return study_key(str(self.ct.resolve()))


_NIFTI_NAMES = (("ct.nii.gz", "pet.nii.gz"), ("CT_image.nii.gz", "PET_image.nii.gz"),
                ("ct.nii", "pet.nii"), ("CT_image.nii", "PET_image.nii"))


def find_nifti_pair(folder: str | os.PathLike[str]) -> NiftiPair | None:
    """Recognise a folder holding ``ct.nii.gz``/``pet.nii.gz`` (or ``CT_image``/``PET_image``) files."""
    folder = Path(folder)
    for ct_name, pet_name in _NIFTI_NAMES:
        if (folder / ct_name).is_file() and (folder / pet_name).is_file():
            return NiftiPair(ct=folder / ct_name, pet=folder / pet_name)
    return None


def _walk_files(root: Path, problems: list[FileProblem]) -> Iterator[Path]:
    """Every regular file below root, in a stable order, symlinked folders included, each real folder once.

    An export is often assembled from links to where the studies lie, so links are followed; a folder reached a second
    time (a link back up the tree, or two links to one place) is not walked again, so a loop ends and no file counts
    twice. A link to a folder that holds the root (``/``, ``..``) is a problem, not walked: it would walk the
    machine. Our own output folders (they hold :data:`OUTPUT_MARK`) are skipped. Folders that cannot be listed,
    files that cannot be looked at and paths too long to open become problems, never silent gaps.
    """
    def unlisted(error: OSError) -> None:
        problems.append(FileProblem(Path(error.filename), f"{error.filename}: cannot read folder ({error.strerror})"))

    enclosing = Path(os.path.realpath(root))
    walked = {str(enclosing)}
    for folder, subfolders, names in os.walk(root, onerror=unlisted, followlinks=True):
        kept = []
        for name in sorted(subfolders):
            real = os.path.realpath(Path(folder, name))
            if real in walked:
                continue
            walked.add(real)
            if enclosing.is_relative_to(real):
                problems.append(FileProblem(Path(folder, name), f"{Path(folder, name)}: a link to a folder that "
                                                                "holds the input folder, not followed"))
            elif not Path(real, OUTPUT_MARK).exists():
                kept.append(name)
        subfolders[:] = kept
        for name in sorted(names):
            path = Path(folder, name)
            if len(os.fsencode(path)) >= _MAX_PATH_BYTES:
                problems.append(FileProblem(path, f"{path}: path longer than {_MAX_PATH_BYTES} bytes, cannot be opened"))
                continue
            try:
                regular = path.is_file()
            except OSError as error:  # a link into /proc, say
                problems.append(FileProblem(path, f"{path}: cannot read ({error.strerror})"))
                continue
            if regular:
                yield path


@dataclass
class _SeriesFiles:
    """Slice headers of one series collected during a scan, before ordering."""

    first: Dataset
    path: Path  # the first file's
    slices: list[tuple[float, Path]] = field(default_factory=list)
    instances: set[str] = field(default_factory=set)
    transfer_syntaxes: set[str] = field(default_factory=set)
    duplicates: int = 0


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value)


def scan_series(root: str | os.PathLike[str]) -> tuple[list[SeriesInfo], list[FileProblem]]:
    """Group every image slice below root by SeriesInstanceUID; unreadable files become problems.

    Non-image objects (RTSTRUCT, SEG, SR..., a media's DICOMDIR) are skipped quietly.
    Raises InputError when root holds no DICOM file at all.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: folder not found")
    series: dict[str, _SeriesFiles] = {}
    problems: list[FileProblem] = []
    found_dicom = False
    for path in _walk_files(root, problems):
        try:
            ds = read_dicom(path, specific_tags=DISCOVERY_TAGS)
        except InputError as exc:
            problems.append(FileProblem(path, str(exc)))
            continue
        found_dicom = True
        if ds.file_meta.get("MediaStorageSOPClassUID") == MediaStorageDirectoryStorage:
            continue  # a DICOMDIR, the index of a CD or USB export: no image, and not a problem
        if "Modality" not in ds:  # every DICOM object has one: the file was cut short
            problems.append(FileProblem(path, f"{path}: no Modality in the header (truncated file?)"))
            continue
        paired = _text(ds, "Modality") in PAIRED_MODALITIES
        problem = multi_frame(ds, path)
        if problem:  # our own fused series (multi-frame OT) are not paired modalities: skipped quietly
            if paired:
                problems.append(FileProblem(path, problem))
            continue
        if "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds:
            if paired:
                problems.append(FileProblem(path, f"{path}: {ds.Modality} file without slice position/orientation"))
            continue
        if "SeriesInstanceUID" not in ds or "StudyInstanceUID" not in ds:
            problems.append(FileProblem(path, f"{path}: missing StudyInstanceUID/SeriesInstanceUID"))
            continue
        try:
            _, position = slice_geometry(ds, path)
        except InputError as exc:
            problems.append(FileProblem(path, str(exc)))
            continue
        entry = series.setdefault(ds.SeriesInstanceUID, _SeriesFiles(first=ds, path=path))
        if ds.StudyInstanceUID != entry.first.StudyInstanceUID:  # UIDs reused across studies: which is right?
            problems.append(FileProblem(path, f"{path}: its series is also in another study ({entry.path}): "
                                              "series UIDs reused across studies, not used"))
            continue
        instance = _text(ds, "SOPInstanceUID")
        if instance and instance in entry.instances:  # the same instance exported twice: keep one copy
            entry.duplicates += 1
            continue
        entry.instances.add(instance)
        entry.transfer_syntaxes.add(str(ds.file_meta.get("TransferSyntaxUID", "")))
        entry.slices.append((float(slice_normal(entry.first.ImageOrientationPatient) @ position), path))
    if not found_dicom:
        raise InputError(f"no DICOM files found under {root}")
    return [_series_info(uid, entry) for uid, entry in series.items()], problems


def _references(ds: Dataset) -> frozenset[str]:
    """Series and instance UIDs a derived image names as its sources."""
    found = {str(item.SeriesInstanceUID) for item in ds.get("ReferencedSeriesSequence") or []
             if "SeriesInstanceUID" in item}
    found |= {str(item.ReferencedSOPInstanceUID) for item in ds.get("SourceImageSequence") or []
              if "ReferencedSOPInstanceUID" in item}
    return frozenset(found)


def _derived(ds: Dataset) -> str:
    """Why a series' header says it is not an original acquisition ("" when it is)."""
    from pipeline.io.derived_series import MANUFACTURER

    if _text(ds, "Manufacturer") == MANUFACTURER:
        return "our own fused output (Manufacturer signature)"
    image_type = ds.get("ImageType") or ()
    if (image_type if isinstance(image_type, str) else image_type[0] if image_type else "") == "DERIVED":
        return "ImageType DERIVED"
    return ""


def _series_info(series_uid: str, entry: _SeriesFiles) -> SeriesInfo:
    ds = entry.first
    ordered = sorted(entry.slices)
    corrected = ds.get("CorrectedImage") or ()
    corrected = (corrected,) if isinstance(corrected, str) else tuple(str(v) for v in corrected)
    return SeriesInfo(
        series_uid=series_uid,
        study_uid=str(ds.StudyInstanceUID),
        modality=_text(ds, "Modality"),
        frame_of_reference_uid=_text(ds, "FrameOfReferenceUID"),
        description=_text(ds, "SeriesDescription"),
        corrected_image=corrected,
        orientation=tuple(float(v) for v in ds.ImageOrientationPatient),
        positions=tuple(p for p, _ in ordered),
        files=tuple(f for _, f in ordered),
        duplicates=entry.duplicates,
        derived=_derived(ds),
        references=_references(ds),
        instances=frozenset(entry.instances - {""}),
        transfer_syntaxes=frozenset(entry.transfer_syntaxes),
        suv_header=_suv_header(ds),
    )


def _suv_header(ds: Dataset) -> str:
    """A digest of the header fields a PET's SUV is computed from (:data:`_SUV_HEADER`), as stored: a weight or dose
    corrected in place keeps every UID, and this is how a rerun tells. A hash, so no patient value reaches a record."""
    digest = hashlib.sha256()
    for keyword in _SUV_HEADER:
        element = ds.get_item(keyword)
        value = getattr(element, "value", b"")
        digest.update(keyword.encode() + b"=" + (value if isinstance(value, bytes) else _stored(value)) + b"\0")
    return digest.hexdigest()[:16]


def _stored(value: object) -> bytes:
    """A decoded value as bytes to digest: a sequence by its items' elements (a damaged number inside is SUV's to
    report, so it is digested as pydicom shows it)."""
    try:
        return repr(value).encode(errors="replace")
    except (ValueError, TypeError) as error:
        return repr(error).encode(errors="replace")


def _common_folder(series: list[SeriesInfo]) -> Path:
    return Path(os.path.commonpath([str(s.folder) for s in series]))


def pick_pair(study_uid: str, series: list[SeriesInfo]) -> StudyPair | StudyFailure:
    """Choose the PET/CT pair of one study, or say in one line why there is none.

    Derived CTs (see :func:`ignored_cts`) are never picked. Only series sharing a FrameOfReferenceUID
    are co-registered. Among those, prefer a pair the loader reads (see :attr:`SeriesInfo.refused`: a study
    holding a readable CT beside a coronal or undecodable one is fused), then attenuation-corrected PET, then the CT
    covering most of the PET's axial range, then the attenuation-correction CT (acquired with the PET, in its
    position) over a diagnostic CT, then more CT slices; the folder breaks remaining ties (UIDs are rewritten by
    anonymisers).
    """
    ignored = {info.series_uid for info, _ in ignored_cts(series)}
    cts = [s for s in series if s.modality == "CT" and s.series_uid not in ignored]
    pets = [s for s in series if s.modality == "PT"]
    where = _common_folder(series)
    key = study_key(study_uid)
    name = f"study {key}"
    if ignored and not cts:
        return StudyFailure(where, f"{name}: its only CT series are derived images (ignored), no original CT", key)
    if not cts or not pets:
        missing = "PET" if cts else "CT"
        present = "CT" if cts else "PET"
        return StudyFailure(where, f"{name} has {present} but no {missing} series", key)
    candidates = [(ct, pet) for ct in cts for pet in pets
                  if ct.frame_of_reference_uid and ct.frame_of_reference_uid == pet.frame_of_reference_uid]
    if not candidates:
        return StudyFailure(where, f"{name}: its PET and CT series have different FrameOfReferenceUIDs "
                                   "(not co-registered)", key)
    ct, pet = max(candidates, key=lambda c: (not (c[0].refused or c[1].refused),
                                             c[1].is_attenuation_corrected, c[1].overlap_mm(c[0]),
                                             c[0].is_attenuation_ct, c[0].n_slices, c[1].n_slices,
                                             str(c[0].folder), str(c[1].folder)))
    return StudyPair(study_uid=study_uid, ct=ct, pet=pet)


def ignored_cts(series: list[SeriesInfo]) -> list[tuple[SeriesInfo, str]]:
    """The CTs of one study that are derived images, never a pair's CT, each with the reason.

    A derived header (ImageType DERIVED, our own Manufacturer signature), or a CT whose images
    reference another CT series of the study: both hold after an anonymiser rewrites every UID.
    """
    cts = [s for s in series if s.modality == "CT"]
    found = []
    for ct in cts:
        source = next((other for other in cts if other is not ct and ct.derives_from(other)), None)
        reason = ct.derived or (f"derived from the CT series in {source.folder}" if source else "")
        if reason:
            found.append((ct, f"{ct.modality} series ignored: {reason}"))
    return found


def ignored_series(series: list[SeriesInfo], picked: StudyPair | StudyFailure) -> list[tuple[SeriesInfo, str]]:
    """The series of one study left out of its pair, each with the reason: derived CTs (:func:`ignored_cts`), and
    CT or PET series the loader would refuse (:attr:`SeriesInfo.refused`) unless ``picked``, whose study then
    fails naming it."""
    derived = ignored_cts(series)
    named = {info.series_uid for info, _ in derived}
    if isinstance(picked, StudyPair):
        named |= {picked.ct.series_uid, picked.pet.series_uid}
    return derived + [(info, f"{info.modality} series ignored: {info.refused}") for info in series
                      if info.series_uid not in named and info.refused]


def _shared_uid(study_uid: str, series: list[SeriesInfo]) -> StudyFailure | None:
    """Two studies under one StudyInstanceUID (a copied or blanked UID): CT+PET on more than one frame of
    reference. Fusing one would silently drop the other, so the study fails naming both."""
    frames: dict[str, list[SeriesInfo]] = defaultdict(list)
    for info in series:
        frames[info.frame_of_reference_uid].append(info)
    complete = [group for group in frames.values() if {s.modality for s in group} >= set(PAIRED_MODALITIES)]
    if len(complete) < 2:
        return None
    places = " and ".join(str(_common_folder(group)) for group in complete)
    return StudyFailure(_common_folder(series), f"study {study_key(study_uid)}: {len(complete)} PET/CT studies "
                                                f"share one StudyInstanceUID{' (empty)' if not study_uid else ''}: "
                                                f"{places}; give each its own UID", study_key(study_uid))


def _without_overlap(pair: StudyPair) -> StudyFailure | None:
    """A PET that covers none of its CT's axial range would fuse as CT alone: the study fails."""
    ct_lo, ct_hi = pair.ct.span_along(pair.ct.normal)
    pet_lo, pet_hi = pair.pet.span_along(pair.ct.normal)
    if pet_lo <= ct_hi and ct_lo <= pet_hi:
        return None
    return StudyFailure(pair.ct.folder, f"study {pair.study_key}: its PET ({pet_lo:.1f} to {pet_hi:.1f} mm, "
                                        f"{pair.pet.folder}) does not overlap its CT ({ct_lo:.1f} to {ct_hi:.1f} mm) "
                                        "axially", pair.study_key)


def _refused(pair: StudyPair) -> StudyFailure | None:
    """A CT or PET the loader refuses (slices not axial, pixels no installed decoder reads) would fail only once the
    batch loads it: the study fails at discovery, so ``inspect`` says so."""
    for role, series in (("CT", pair.ct), ("PET", pair.pet)):
        if series.refused:
            return StudyFailure(series.folder, f"study {pair.study_key}: {role} series: {series.refused}",
                                pair.study_key)
    return None


def discover_studies(root: str | os.PathLike[str]) -> DiscoveryResult:
    """Scan a folder tree for PET/CT studies; see the module docstring for what is read and reported."""
    series, problems = scan_series(root)
    by_study: dict[str, list[SeriesInfo]] = defaultdict(list)
    for info in series:
        if info.modality in PAIRED_MODALITIES:
            by_study[info.study_uid].append(info)
    pairs: list[StudyPair] = []
    failures: list[StudyFailure] = []
    ignored: list[IgnoredSeries] = []
    for study_uid in sorted(by_study, key=study_key):
        study = by_study[study_uid]
        outcome = _shared_uid(study_uid, study) or pick_pair(study_uid, study)
        ignored += [IgnoredSeries(info.folder, reason) for info, reason in ignored_series(study, outcome)]
        if isinstance(outcome, StudyPair):  # a refused series first: its overlap, along a coronal normal, means nothing
            outcome = _refused(outcome) or _without_overlap(outcome) or outcome
        (pairs if isinstance(outcome, StudyPair) else failures).append(outcome)
    return DiscoveryResult(pairs=pairs, failures=failures, problems=problems, ignored=ignored)
