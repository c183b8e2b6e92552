"""Tissue classes of the phantom and what each one looks like to the CT and to the PET.

A voxel of the label volume holds one tissue; lookup tables indexed by the label give the CT
number (HU) and the designed body-weight SUV, so both images come from one segmentation and
agree by construction. Values are typical adult FDG-PET/CT figures.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np


class Tissue(IntEnum):
    """Label values of the phantom's segmentation (uint8)."""

    AIR = 0
    FAT = 1
    SOFT_TISSUE = 2
    LUNG = 3
    PULMONARY_VESSEL = 4
    BLOOD_POOL = 5
    MYOCARDIUM = 6
    LIVER = 7
    CORTICAL_BONE = 8
    MARROW_BONE = 9
    TUMOUR = 10


#: CT number (HU) of each tissue; blood pool carries a little iodine contrast.
HU: dict[Tissue, float] = {
    Tissue.AIR: -1000.0,
    Tissue.FAT: -100.0,
    Tissue.SOFT_TISSUE: 40.0,
    Tissue.LUNG: -850.0,
    Tissue.PULMONARY_VESSEL: 40.0,
    Tissue.BLOOD_POOL: 110.0,
    Tissue.MYOCARDIUM: 40.0,
    Tissue.LIVER: 60.0,
    Tissue.CORTICAL_BONE: 700.0,
    Tissue.MARROW_BONE: 250.0,
    Tissue.TUMOUR: 30.0,
}

#: Designed body-weight SUV of each tissue; the tumour's value is the caller's ``tumour_suv``.
SUV: dict[Tissue, float] = {
    Tissue.AIR: 0.0,
    Tissue.FAT: 0.4,
    Tissue.SOFT_TISSUE: 1.0,
    Tissue.LUNG: 0.4,
    Tissue.PULMONARY_VESSEL: 1.6,
    Tissue.BLOOD_POOL: 1.6,
    Tissue.MYOCARDIUM: 4.0,
    Tissue.LIVER: 2.5,
    Tissue.CORTICAL_BONE: 0.6,
    Tissue.MARROW_BONE: 1.5,
}


def lookup_table(values: dict[Tissue, float]) -> np.ndarray:
    """float32 array indexed by label, so ``table[labels]`` maps a label volume to intensities."""
    table = np.zeros(max(Tissue) + 1, dtype=np.float32)
    for tissue, value in values.items():
        table[tissue] = value
    return table


def suv_table(tumour_suv: float) -> dict[Tissue, float]:
    """The designed SUV of every tissue with the tumour's uptake filled in."""
    return {**SUV, Tissue.TUMOUR: float(tumour_suv)}
