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

__all__ = [
    "METRIC_NAMES",
    "FusionMetric",
    "FusionMetricHandler",
    "average_gradient",
    "fusion_metrics",
    "information_entropy",
    "mutual_information",
    "psnr",
    "qabf",
    "spatial_frequency",
    "ssim",
    "standard_deviation",
    "summarise",
]
