"""The FDG injection and the body-weight SUV calibration that follows from it.

SUV = C / (dose_at_scan_start / weight_g), with the injected dose decayed from injection
(RadiopharmaceuticalStartTime) to the PET series start (SeriesTime), which is the reference time
of DecayCorrection START. The phantom writes C = SUV * bqml_per_suv, so a reader applying this
formula to the headers recovers the designed SUVs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

#: Physical half-life of fluorine-18 (s), the value DICOM headers of FDG studies carry.
F18_HALF_LIFE_S = 6586.2


@dataclass(frozen=True)
class Injection:
    """Dose, patient weight and timing of one FDG injection."""

    dose_bq: float
    patient_weight_kg: float
    injected_at: datetime
    uptake_delay_s: float
    half_life_s: float = F18_HALF_LIFE_S

    @property
    def scan_start(self) -> datetime:
        """Start of the PET series, the decay-correction reference."""
        return self.injected_at + timedelta(seconds=self.uptake_delay_s)

    @property
    def decay_factor(self) -> float:
        """Fraction of the injected activity left at the scan start."""
        return 0.5 ** (self.uptake_delay_s / self.half_life_s)

    @property
    def bqml_per_suv(self) -> float:
        """Activity concentration (Bq/ml) of one body-weight SUV at the scan start."""
        return self.dose_bq * self.decay_factor / (self.patient_weight_kg * 1000.0)
