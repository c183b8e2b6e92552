"""SUV from PET headers, following the IBSI-SUV standardised computation (the ``suv_dro`` manual).

SUV = C [Bq/ml] * N / dose decayed to the reference time [Bq], where the normaliser N is the body
weight (SUVbw, g), lean body mass (James 1976, SUVlbm), ideal body weight (SUVibw) or body surface
area (Du Bois, SUVbsa, cm^2). What the pixels are is read from the header:

- Units BQML, or CNTS with Philips' private activity factor (7053,1009): activity concentration.
- Units GML or SUV (SUV of the header's SUVType, BW when absent), CM2ML (SUVbsa), CNTS with Philips' SUV
  factor (7053,1000) (SUVbw): already SUV, re-normalised to the requested type by N_target / N_source.

Reference time per DecayCorrection: ADMIN (no decay); START: the vendor's private decay datetime
(GE, Siemens), else SeriesTime, unless SeriesTime is later than the earliest acquisition (re-written
by a re-reconstruction), then that slice's acquisition + mean count-rate time - FrameReferenceTime
(GE: acquisition - FrameReferenceTime); NONE: each slice is decayed to its own acquisition plus the
mean count-rate time of its frame. Undated acquisition times are ordered around SeriesTime, each on the
day that puts it within 12 h of it (a scan past midnight). A dose below 1e5 Bq is read as MBq, a
PatientWeight of 1000 or more as grams; a weight outside 1-500 kg, or a weight or dose that is not a finite
positive number, is refused. The injection time tolerates midnight and de-identified dates; an injection
logged up to 10 min after the reference time, across midnight too, is clock skew (no decay, with a warning); one
later, or longer before it than 10 half-lives, is refused.

PET without absolute units (CNTS, PROPCNTS, ... with no factor to Bq/ml) is still fused: divided by its
99th percentile inside the body (voxels above 10% of the maximum) and multiplied by
``RELATIVE_REFERENCE``, so that percentile shows as an SUV of 5 would. Units become ``relative``: never
an SUV claim. ``factor=`` (pixels x factor = SUVbw) replaces that scaling when the user knows better.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Hashable, Mapping
from datetime import date, datetime, time, timedelta

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from pydicom.valuerep import DA, DT, TM

from pipeline.errors import InputError
from pipeline.io.headers import UNDATED_DAY, undated_moment

logger = logging.getLogger(__name__)

# SUV type (DICOM SUVType code) -> the Units our SUV volumes carry.
SUV_TYPES = {"BW": "SUVbw", "LBMJAMES128": "SUVlbm", "IBW": "SUVibw", "BSA": "SUVbsa"}
SUV_UNITS = SUV_TYPES["BW"]
RELATIVE_UNITS = "relative"
RELATIVE_PERCENTILE = 99.0
RELATIVE_BODY_FRACTION = 0.1  # voxels above this fraction of the maximum are the body
RELATIVE_REFERENCE = 5.0  # the percentile is shown as this SUV would be
_OF_SUV_TYPE = frozenset({"GML", "SUV"})
"""Units of an SUV of the header's SUVType (BW when absent): DICOM's g/ml, and "SUV" as a user types it for a NIfTI
(the SUV exports of public datasets say no more); that fell back to a relative scaling, with a warning."""
_MBQ_BELOW_BQ = 1e5  # no PET is injected with under 0.1 MBq: such a dose is in MBq
_GRAMS_FROM = 1000.0  # no patient weighs a tonne: a PatientWeight this large is in grams (70000 for 70 kg)
_PLAUSIBLE_KG = (1.0, 500.0)  # a weight outside is a header error that would scale every SUV by it
_ONE_DAY = timedelta(days=1)
_PLAUSIBLE_HALF_LIVES = 10  # an injection longer ago than this is a header error, not a PET scan
# An injection logged this much after the decay reference is clock skew (injector and scanner clocks apart by
# minutes, an injection time rounded up to the minute, a dynamic scan started at injection), taken as no decay:
# at most 6% of F-18 decay. More is a wrong time, refused rather than silently decayed by zero (or a day).
_CLOCK_SKEW = timedelta(minutes=10)


class NoAbsoluteUnits(InputError):
    """PET whose units have no way to Bq/ml or SUV (counts): fusable with a relative scaling only."""


def is_suv_units(units: object) -> bool:
    """DICOM ``GML`` (g/ml, what SUVbw is), ``SUV``, or one of our own SUV markers (``SUVbw``, ``SUVlbm``...)."""
    return str(units).upper() in {*_OF_SUV_TYPE, *(u.upper() for u in SUV_TYPES.values())}


def _source(meta: Mapping[str, object]) -> str:
    return str(meta.get("filename_or_obj", "PET volume"))


def _header(meta: Mapping[str, object], keyword: str, why: str = "SUV") -> object:
    value = meta.get(keyword)
    if value is None or value == "":
        raise InputError(f"{_source(meta)}: PET header lacks {keyword}, needed for {why}")
    return value


def _number(meta: Mapping[str, object], value: object, name: str) -> float:
    """A header value as a number: text that is none ('abc') fails in one line naming the file and the field."""
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InputError(f"{_source(meta)}: {name} {str(value)[:64]!r} is not a number") from None


def _positive(meta: Mapping[str, object], value: object, name: str, unit: str) -> float:
    """``value`` as a finite positive number: 0, negative, NaN or Infinity (valid DS strings) would poison SUV."""
    number = _number(meta, value, name)
    if not (math.isfinite(number) and number > 0):
        raise InputError(f"{_source(meta)}: {name} {number} {unit} must be a positive number for SUV")
    return number


def _half_life(meta: Mapping[str, object]) -> float:
    """RadionuclideHalfLife in s."""
    return _positive(meta, _header(meta, "RadionuclideHalfLife"), "RadionuclideHalfLife", "s")


def _weight_kg(meta: Mapping[str, object], weight_kg: float | None, why: str) -> float:
    """The patient's weight in kg (``weight_kg`` overrides the header); a header weight in grams is recognised.

    As with the dose's MBq, a header weight in grams is converted with a warning; any other weight outside
    :data:`_PLAUSIBLE_KG` is a typo that would scale every SUV by its error, so it is refused.
    """
    given = weight_kg is not None
    name = "weight given" if given else "PatientWeight"
    weight = _positive(meta, weight_kg if given else _header(meta, "PatientWeight", why), name, "kg")
    if not given and weight >= _GRAMS_FROM:
        logger.warning("%s: PatientWeight %g read as grams", _source(meta), weight)
        weight /= 1000.0
    lightest, heaviest = _PLAUSIBLE_KG
    if not lightest <= weight <= heaviest:
        raise InputError(f"{_source(meta)}: {name} {weight:g} kg is not a patient's weight "
                         f"({lightest:g}-{heaviest:g} kg)")
    return weight


def normaliser(meta: Mapping[str, object], suv_type: str, weight_kg: float | None = None) -> float:
    """N of ``suv_type`` in g (cm^2 for BSA) from the patient's weight, size (m) and sex.

    Sex O (or unknown) takes the mean of the male and female formulas, as the IBSI-SUV manual does.
    """
    why = "SUV" if suv_type == "BW" else f"SUV type {suv_type}"
    weight = _weight_kg(meta, weight_kg, why)
    if suv_type == "BW":
        return weight * 1000.0
    height_cm = _positive(meta, _header(meta, "PatientSize", why), "PatientSize", "m") * 100.0
    if suv_type == "BSA":
        return 0.007184 * weight**0.425 * height_cm**0.725 * 1e4
    if suv_type not in SUV_TYPES:
        raise InputError(f"{_source(meta)}: SUV type {suv_type} is not supported (use {', '.join(SUV_TYPES)})")
    if suv_type == "LBMJAMES128":
        ratio = (weight / height_cm) ** 2
        male, female = 1.10 * weight - 128.0 * ratio, 1.07 * weight - 148.0 * ratio
    else:
        male, female = 48.0 + 1.06 * (height_cm - 152.0), 45.5 + 0.91 * (height_cm - 152.0)
    sex = str(_header(meta, "PatientSex", why)).upper()
    return 1000.0 * {"M": male, "F": female}.get(sex, (male + female) / 2.0)


def _slices(meta: Mapping[str, object]) -> list[Mapping[str, object]]:
    """Per-slice PET fields (one entry standing for the series when the loader gave none, e.g. NIfTI)."""
    return list(meta.get("pet_slices") or [meta])


def _philips(meta: Mapping[str, object], name: str) -> np.ndarray | None:
    values = [s.get(name) for s in _slices(meta)]
    return np.asarray(values, float) if all(v not in (None, 0.0) for v in values) else None


def pixel_meaning(meta: Mapping[str, object], units: str | None = None) -> tuple[str | None, np.ndarray]:
    """(SUV type the pixels already are, or None for Bq/ml; multiplier per slice to those values).

    Raises InputError when the units have no way to Bq/ml or SUV (relative PET: see :mod:`relative`).
    """
    found = str(meta.get("Units") or units or "").upper()
    if not found:
        raise InputError(f"{_source(meta)}: PET header lacks Units: name them (the bundle's --pet_units: BQML or SUV, "
                         "say) or give the SUV factor (--pet_factor in the bundle, --pet-factor in fuse-batch)")
    one = np.ones(1)
    if found == "BQML":
        return None, one
    ours = {u.upper(): code for code, u in SUV_TYPES.items()}
    if found in ours:
        return ours[found], one
    if found in _OF_SUV_TYPE:
        return str(meta.get("SUVType") or "BW").upper(), one
    if found == "CM2ML":
        return "BSA", one
    activity, suv = _philips(meta, "PhilipsActivityScale"), _philips(meta, "PhilipsSUVScale")
    if activity is not None:
        return None, activity
    if suv is not None:
        return "BW", suv
    raise NoAbsoluteUnits(f"{_source(meta)}: PET Units {found} cannot be converted to SUV "
                          "(need BQML, GML, CM2ML or Philips scale factors)")


def _parsed(meta: Mapping[str, object], kind: type[DA] | type[TM] | type[DT], value: object) -> date | time | datetime:
    """A DA, TM or DT header value; a malformed one is an :class:`InputError` naming it."""
    try:
        return kind(str(value))
    except ValueError as error:
        raise InputError(f"{_source(meta)}: unreadable date or time in the PET header: {error}") from None


def _when(meta: Mapping[str, object], day: object, time_of_day: object) -> tuple[bool, datetime]:
    """(whether the date is known, the moment on it, or on an arbitrary day)."""
    known = bool(day)
    return known, datetime.combine(_parsed(meta, DA, day) if known else UNDATED_DAY, _parsed(meta, TM, time_of_day))


def _plausible(meta: Mapping[str, object], interval: timedelta) -> bool:
    """Whether a tracer is still imaged ``interval`` after injection (Zr-89 or I-124 are, days later)."""
    return interval.total_seconds() <= _PLAUSIBLE_HALF_LIVES * _half_life(meta)


def _not_before_injection(meta: Mapping[str, object], interval: timedelta, injection: time, reference: time) -> float:
    """``interval`` in s: a negative one is clock skew (0 s, warned) up to :data:`_CLOCK_SKEW`, and one longer than a
    tracer is imaged, or more negative, is a header error."""
    at = f"injection at {injection.isoformat('seconds')} is"
    reference_time = f"the decay reference time {reference.isoformat('seconds')}"
    if interval >= timedelta(0):
        if not _plausible(meta, interval):
            raise InputError(f"{_source(meta)}: {at} {interval.total_seconds() / 3600:.1f} h before {reference_time}, "
                             f"more than {_PLAUSIBLE_HALF_LIVES} half-lives: a header time is wrong")
        return interval.total_seconds()
    times = f"{at} {-interval.total_seconds() / 60:.1f} min after {reference_time}"
    if interval < -_CLOCK_SKEW:
        raise InputError(f"{_source(meta)}: {times}, more than clock skew: a header time is wrong")
    logger.warning("%s: %s: taken as clock skew, no decay", _source(meta), times)
    return 0.0


def _seconds_since_injection(meta: Mapping[str, object], reference: tuple[bool, datetime]) -> float:
    """Seconds from injection to ``reference``; tolerates clock skew, midnight and de-identified dates.

    With dates on both sides the true interval is used when at least -:data:`_CLOCK_SKEW` and under a day or
    :data:`_PLAUSIBLE_HALF_LIVES` half-lives. Otherwise (no dates, an injection date filled in from the scan's, or
    dates a de-identification shifted apart) times of day are compared, within a day either way: an injection up to
    :data:`_CLOCK_SKEW` after the reference, across midnight too, is clock skew; one further "after" it is the day
    before when that is plausible. What is left is checked by :func:`_not_before_injection`: never a day of decay
    for minutes of skew.
    """
    dated, moment = reference
    start_datetime = meta.get("RadiopharmaceuticalStartDateTime")
    start = _parsed(meta, DT, start_datetime).replace(tzinfo=None) if start_datetime else None
    if dated and start is not None:
        interval = moment - start
        if interval >= -_CLOCK_SKEW and (interval < _ONE_DAY or _plausible(meta, interval)):
            return _not_before_injection(meta, interval, start.time(), moment.time())
    injection = _parsed(meta, TM, meta["RadiopharmaceuticalStartTime"]) if meta.get("RadiopharmaceuticalStartTime") \
        else start.time() if start is not None else _header(meta, "RadiopharmaceuticalStartTime")
    interval = moment - datetime.combine(moment.date(), injection)  # within a day either way
    if interval - _ONE_DAY >= -_CLOCK_SKEW:
        interval -= _ONE_DAY  # injected just after a reference before midnight: skew
    elif interval < -_CLOCK_SKEW and _plausible(meta, interval + _ONE_DAY):
        interval += _ONE_DAY  # injected before midnight
    return _not_before_injection(meta, interval, injection, moment.time())


def mean_count_time(duration_s: float, half_life_s: float) -> float:
    """Time after a frame's start at which the decaying activity equals its mean over the frame."""
    if duration_s <= 0:
        return 0.0
    rate = math.log(2.0) / half_life_s
    return math.log(rate * duration_s / -math.expm1(-rate * duration_s)) / rate


def _acquisition(item: Mapping[str, object], meta: Mapping[str, object]) -> tuple[bool, datetime]:
    """A slice's acquisition moment (the series' when the slice does not say)."""
    return _when(meta, item.get("AcquisitionDate") or meta.get("AcquisitionDate"),
                 item.get("AcquisitionTime") or _header(meta, "AcquisitionTime"))


def _frame_s(item: Mapping[str, object], keyword: str) -> float:
    return float(item.get(keyword) or 0.0) / 1000.0


def _start_reference(meta: Mapping[str, object]) -> tuple[bool, datetime]:
    """The one instant a START series is decay-corrected to (see the module docstring)."""
    for keyword in ("GEDecayDateTime", "SiemensDecayDateTime"):
        if meta.get(keyword):
            return True, _parsed(meta, DT, meta[keyword]).replace(tzinfo=None)
    series = _when(meta, meta.get("SeriesDate"), _header(meta, "SeriesTime"))
    acquired = [(_acquisition(s, meta), s) for s in _slices(meta) if s.get("AcquisitionTime")]
    if not acquired:
        return series
    undated = not (series[0] and all(known for (known, _), _ in acquired))

    def order(when: tuple[bool, datetime]) -> datetime:
        return undated_moment(when[1].time(), series[1].time()) if undated else when[1]

    (dated, earliest), first = min(acquired, key=lambda a: order(a[0]))
    if order(series) <= order((dated, earliest)):
        return series
    logger.warning("%s: SeriesTime is later than the first acquisition; decay reference taken from the "
                   "first acquisition", _source(meta))
    offset = -_frame_s(first, "FrameReferenceTime")
    if "GE" not in str(meta.get("Manufacturer", "")).upper().split():
        offset += mean_count_time(_frame_s(first, "ActualFrameDuration"), _half_life(meta))
    return dated, earliest + timedelta(seconds=offset)


def decay_seconds(meta: Mapping[str, object]) -> np.ndarray:
    """Seconds of decay from injection to each slice's reference time (one value when uniform)."""
    correction = str(_header(meta, "DecayCorrection")).upper()
    if correction == "ADMIN":
        return np.zeros(1)
    if correction not in ("START", "NONE"):
        raise InputError(f"{_source(meta)}: unsupported DecayCorrection {correction} (need START, ADMIN or NONE)")
    if correction == "START":
        return np.array([_seconds_since_injection(meta, _start_reference(meta))])
    half_life = _half_life(meta)
    seconds = []
    for item in _slices(meta):
        dated, moment = _acquisition(item, meta)
        moment += timedelta(seconds=mean_count_time(_frame_s(item, "ActualFrameDuration"), half_life))
        seconds.append(_seconds_since_injection(meta, (dated, moment)))
    return np.asarray(seconds)


def injected_dose(meta: Mapping[str, object], dose_bq: float | None = None) -> float:
    """The injected dose in Bq (``dose_bq`` overrides the header; a header dose in MBq is recognised)."""
    given = dose_bq is not None
    dose = _positive(meta, dose_bq if given else _header(meta, "RadionuclideTotalDose"),
                     "dose given" if given else "RadionuclideTotalDose", "Bq")
    if not given and dose < _MBQ_BELOW_BQ:
        logger.warning("%s: RadionuclideTotalDose %g read as MBq", _source(meta), dose)
        dose *= 1e6
    return dose


def suv_factor(meta: Mapping[str, object], weight_kg: float | None = None, dose_bq: float | None = None,
               units: str | None = None, suv_type: str = "BW") -> np.ndarray:
    """Multiplier per PET slice (one value when every slice shares it) turning the pixels into ``suv_type``.

    ``weight_kg``/``dose_bq`` (injected dose at injection time) override the header; ``units`` is
    assumed when the header has none (NIfTI input). Raises InputError naming the missing tag.
    """
    source_type, scale = pixel_meaning(meta, units)
    if source_type == suv_type and weight_kg is None:
        return scale
    target = normaliser(meta, suv_type, weight_kg)
    if source_type is not None:  # the scanner normalised by the header's weight: a weight given corrects it
        return scale * target / normaliser(meta, source_type)
    dose = injected_dose(meta, dose_bq)
    decay = decay_seconds(meta)
    half_life = _half_life(meta) if np.any(decay) else 1.0
    decayed = dose * np.exp(-math.log(2.0) * decay / half_life)
    return scale * target / decayed


class PETToSUV(Transform):
    """Convert a PET MetaTensor to SUV of ``suv_type`` (BW, LBMJAMES128, IBW or BSA).

    ``meta["Units"]`` becomes ``SUVbw`` (``SUVlbm``...), ``meta["suv_type"]`` the DICOM SUVType code.
    """

    def __init__(self, weight_kg: float | None = None, dose_bq: float | None = None, units: str | None = None,
                 suv_type: str = "BW", factor: float | None = None):
        if suv_type not in SUV_TYPES:
            raise ValueError(f"suv_type must be one of {sorted(SUV_TYPES)}, got {suv_type!r}")
        if factor is not None and not factor > 0:
            raise ValueError(f"factor must be positive, got {factor}")
        self.weight_kg = weight_kg
        self.dose_bq = dose_bq
        self.units = units
        self.suv_type = suv_type
        self.factor = factor

    def __call__(self, pet: MetaTensor, name: str | None = None) -> MetaTensor:
        """``name`` (a study key) names the study in the warning about relative scaling."""
        if self.factor is not None:
            return _scaled(pet, self.factor, SUV_UNITS, f"{SUV_UNITS} (factor {self.factor:g} given by hand)")
        try:
            factor = suv_factor(pet.meta, self.weight_kg, self.dose_bq, self.units, self.suv_type)
        except NoAbsoluteUnits as error:
            return relative_pet(pet, name or _source(pet.meta), str(error))
        if factor.size not in (1, pet.shape[-1]):
            raise InputError(f"{_source(pet.meta)}: {factor.size} slice factors for {pet.shape[-1]} PET slices")
        uniform = bool(np.all(factor == factor[0]))
        suv = pet * float(factor[0]) if uniform else pet * torch.as_tensor(factor, dtype=pet.dtype)
        suv.meta = {**pet.meta, "Units": SUV_TYPES[self.suv_type], "suv_type": self.suv_type,
                    "pet_scaling": SUV_TYPES[self.suv_type],
                    "suv_factor": float(factor[0]) if uniform else factor.tolist()}
        return suv


def _scaled(pet: MetaTensor, factor: float, units: str, scaling: str) -> MetaTensor:
    out = pet * factor
    out.meta = {**pet.meta, "Units": units, "pet_scaling": scaling, "suv_factor": factor}
    return out


def relative_pet(pet: MetaTensor, name: str, why: str) -> MetaTensor:
    """PET without absolute units scaled for display (see the module docstring), with a one-line warning."""
    values = pet.detach().cpu().numpy()
    body = values[values > RELATIVE_BODY_FRACTION * float(values.max())]
    if body.size == 0:
        raise InputError(f"{_source(pet.meta)}: PET holds no positive value to scale")
    reference = float(np.percentile(body, RELATIVE_PERCENTILE))
    scaling = f"relative: body p{RELATIVE_PERCENTILE:g} shown as SUV {RELATIVE_REFERENCE:g}"
    logger.warning("study %s: PET has no absolute units (%s); fused with %s, not SUV", name,
                   why.split(": ", 1)[-1], scaling)
    return _scaled(pet, RELATIVE_REFERENCE / reference, RELATIVE_UNITS, scaling)


class PETToSUVd(MapTransform):
    """Dictionary twin of :class:`PETToSUV` (default key ``"pet"``)."""

    def __init__(self, keys: KeysCollection = "pet", weight_kg: float | None = None, dose_bq: float | None = None,
                 units: str | None = None, suv_type: str = "BW", factor: float | None = None,
                 allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.converter = PETToSUV(weight_kg, dose_bq, units, suv_type, factor)

    def __call__(self, data: Mapping[Hashable, MetaTensor]) -> dict[Hashable, MetaTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.converter(d[key], d.get("study_key"))
        return d
