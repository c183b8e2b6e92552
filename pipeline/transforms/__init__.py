"""MONAI Transform / MapTransform twins of the data path, nameable with ``_target_`` in bundle configs."""

from pipeline.transforms.loading import LoadStudy, LoadStudyd
from pipeline.transforms.resample import ResampleToReference, ResampleToReferenced
from pipeline.transforms.slicing import AxialSlices, AxialSlicesd, BodySlicesd, SlicesToVolume, SlicesToVolumed
from pipeline.transforms.suv import PETToSUV, PETToSUVd
from pipeline.transforms.windowing import CTWindow, CTWindowd, SUVScale, SUVScaled

__all__ = [
    "AxialSlices",
    "AxialSlicesd",
    "BodySlicesd",
    "CTWindow",
    "CTWindowd",
    "LoadStudy",
    "LoadStudyd",
    "PETToSUV",
    "PETToSUVd",
    "ResampleToReference",
    "ResampleToReferenced",
    "SUVScale",
    "SUVScaled",
    "SlicesToVolume",
    "SlicesToVolumed",
]
