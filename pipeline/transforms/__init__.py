"""MONAI Transform / MapTransform twins of the data path, nameable with ``_target_`` in bundle configs."""

from pipeline.transforms.lesion import KnownLesiond
from pipeline.transforms.loading import LoadStudyd
from pipeline.transforms.resample import BlankUncoveredSlicesd, ResampleToReference, ResampleToReferenced
from pipeline.transforms.slicing import BodySlicesd, SelectBodySlicesd
from pipeline.transforms.suv import PETToSUV, PETToSUVd
from pipeline.transforms.windowing import CTWindow, CTWindowd, SUVScale, SUVScaled

__all__ = [
    "BlankUncoveredSlicesd",
    "BodySlicesd",
    "CTWindow",
    "CTWindowd",
    "KnownLesiond",
    "LoadStudyd",
    "PETToSUV",
    "PETToSUVd",
    "ResampleToReference",
    "ResampleToReferenced",
    "SUVScale",
    "SelectBodySlicesd",
    "SUVScaled",
]
