"""Fusion quality metrics: plain functions on slices and their MONAI/ignite workflow wrappers."""

from pipeline.metrics.fusion import (
    METRIC_NAMES,
    average_gradient,
    fusion_metrics,
    information_entropy,
    mutual_information,
    psnr,
    qabf,
    spatial_frequency,
    ssim,
    standard_deviation,
    summarise,
)
from pipeline.metrics.handlers import FusionMetric, FusionMetricHandler
from pipeline.metrics.lesion import (
    lesion_contrast,
    lesion_contrast_ratio,
    lesion_mask_from_pet,
    phantom_lesion_mask,
    ring_mask,
)

__all__ = [
    "METRIC_NAMES",
    "FusionMetric",
    "FusionMetricHandler",
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
    "spatial_frequency",
    "ssim",
    "standard_deviation",
    "summarise",
]
