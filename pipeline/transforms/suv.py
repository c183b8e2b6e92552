"""Body-weight SUV from PET activity concentration, using the DICOM header fields kept in ``.meta``.

SUVbw = C [Bq/ml] * weight [g] / injected dose decayed to the reference time [Bq]. The reference time
follows DecayCorrection: START (values decay-corrected to the series start, SeriesTime), ADMIN (already
corrected to injection: no decay) or NONE (not corrected: the dose is decayed to the first
acquisition, an approximation for multi-bed series, hence a warning). Images already in SUV (Units
GML, as IBSI/TCIA exports store them) pass unchanged.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Hashable, Mapping
from datetime import date, datetime, timedelta

from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from pydicom.valuerep import DA, DT, TM

from pipeline.errors import InputError

logger = logging.getLogger(__name__)

SUV_UNITS = "SUVbw"
_ONE_DAY = timedelta(days=1)


def is_suv_units(units: object) -> bool:
    """DICOM ``GML`` (g/ml, what SUVbw is) or our own ``SUVbw`` marker."""
    return str(units).upper() in {"GML", SUV_UNITS.upper()}


def _source(meta: Mapping[str, object]) -> str:
    return str(meta.get("filename_or_obj", "PET volume"))


def _header(meta: Mapping[str, object], keyword: str) -> object:
    value = meta.get(keyword)
    if value is None or value == "":
        raise InputError(f"{_source(meta)}: PET header lacks {keyword}, needed for SUV")
    return value


def _moment(meta: Mapping[str, object], date_keyword: str, time_keyword: str) -> tuple[date | None, datetime]:
    """A header time as a datetime (on its date when known, else on an arbitrary day) plus that date."""
    time_of_day = TM(str(_header(meta, time_keyword)))
    day = DA(str(meta[date_keyword])) if meta.get(date_keyword) else None
    return day, datetime.combine(day or date(2000, 1, 1), time_of_day)


def _seconds_since_injection(meta: Mapping[str, object], date_keyword: str, time_keyword: str) -> float:
    """Seconds from injection to the reference moment; tolerates midnight and de-identified dates.

    With full dates on both sides the true interval is used when it is plausible (0 to 24 h);
    otherwise (no dates, or dates shifted inconsistently by de-identification) times of day are
    compared and an injection "later" than the scan is taken as the previous day.
    """
    day, reference = _moment(meta, date_keyword, time_keyword)
    start_datetime = meta.get("RadiopharmaceuticalStartDateTime")
    if day is not None and start_datetime:
        interval = reference - DT(str(start_datetime)).replace(tzinfo=None)
        if timedelta(0) <= interval < _ONE_DAY:
            return interval.total_seconds()
    injection = TM(str(_header(meta, "RadiopharmaceuticalStartTime")))
    interval = reference - datetime.combine(reference.date(), injection)
    return (interval % _ONE_DAY).total_seconds()


def suv_factor(meta: Mapping[str, object], weight_kg: float | None = None, dose_bq: float | None = None,
               units: str | None = None) -> float:
    """Multiplier turning the PET values described by ``meta`` into SUVbw (1.0 when already SUV).

    ``weight_kg``/``dose_bq`` (injected dose at injection time) override the header; ``units`` is
    assumed when the header has none (NIfTI input). Raises InputError naming the missing tag.
    """
    found_units = str(meta.get("Units") or units or "")
    if not found_units:
        raise InputError(f"{_source(meta)}: PET header lacks Units (pass units= for NIfTI input)")
    if is_suv_units(found_units):
        return 1.0
    if found_units.upper() != "BQML":
        raise InputError(f"{_source(meta)}: PET Units {found_units} cannot be converted to SUV (need BQML or GML)")
    weight = float(weight_kg if weight_kg is not None else _header(meta, "PatientWeight"))
    dose = float(dose_bq if dose_bq is not None else _header(meta, "RadionuclideTotalDose"))
    if weight <= 0 or dose <= 0:
        raise InputError(f"{_source(meta)}: patient weight {weight} kg and dose {dose} Bq must be positive for SUV")
    correction = str(_header(meta, "DecayCorrection")).upper()
    if correction == "ADMIN":
        decayed_dose = dose
    else:
        if correction == "NONE":
            logger.warning("%s: PET not decay corrected; SUV uses the dose decayed to the first acquisition",
                           _source(meta))
            elapsed = _seconds_since_injection(meta, "AcquisitionDate", "AcquisitionTime")
        elif correction == "START":
            elapsed = _seconds_since_injection(meta, "SeriesDate", "SeriesTime")
        else:
            raise InputError(f"{_source(meta)}: unsupported DecayCorrection {correction} (need START, ADMIN or NONE)")
        half_life = float(_header(meta, "RadionuclideHalfLife"))
        decayed_dose = dose * math.exp(-math.log(2.0) * elapsed / half_life)
    return weight * 1000.0 / decayed_dose


class PETToSUV(Transform):
    """Convert a PET MetaTensor to body-weight SUV; ``meta["Units"]`` becomes ``"SUVbw"``."""

    def __init__(self, weight_kg: float | None = None, dose_bq: float | None = None, units: str | None = None):
        self.weight_kg = weight_kg
        self.dose_bq = dose_bq
        self.units = units

    def __call__(self, pet: MetaTensor) -> MetaTensor:
        factor = suv_factor(pet.meta, self.weight_kg, self.dose_bq, self.units)
        suv = pet * factor if factor != 1.0 else pet.clone()
        suv.meta = {**pet.meta, "Units": SUV_UNITS, "suv_factor": factor}
        return suv


class PETToSUVd(MapTransform):
    """Dictionary twin of :class:`PETToSUV` (default key ``"pet"``)."""

    def __init__(self, keys: KeysCollection = "pet", weight_kg: float | None = None, dose_bq: float | None = None,
                 units: str | None = None, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.converter = PETToSUV(weight_kg, dose_bq, units)

    def __call__(self, data: Mapping[Hashable, MetaTensor]) -> dict[Hashable, MetaTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.converter(d[key])
        return d
