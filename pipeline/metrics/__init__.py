"""Fusion quality metrics: plain functions on slices (their ignite handlers live in :mod:`pipeline.handlers`)."""

from pipeline.metrics.fusion import (
    METRIC_NAMES,
    average_gradient,
    fusion_metrics,
    information_entropy,
    mutual_information,
    psnr,
    qabf,
    score_slices,
    spatial_frequency,
    ssim,
    standard_deviation,
    summarise,
)
from pipeline.metrics.lesion import (
    lesion_contrast,
    lesion_contrast_ratio,
    lesion_mask_from_pet,
    phantom_lesion_mask,
    ring_mask,
)

__all__ = [
    "METRIC_NAMES",
    "average_gradient",
    "fusion_metrics",
    "information_entropy",
    "lesion_contrast",
    "lesion_contrast_ratio",
    "lesion_mask_from_pet",
    "mutual_information",
    "phantom_lesion_mask",
    "psnr",
    "qabf",
    "ring_mask",
    "score_slices",
    "spatial_frequency",
    "ssim",
    "standard_deviation",
    "summarise",
]
