"""Ignite handlers the bundle configs name with ``_target_``: what an engine does at its events.

Metrics (:class:`FusionMetricHandler`, :class:`FusionSliceMetrics`), reports
(:class:`FusionReportWriter`, :class:`LesionContrastReport`), fused volumes on disk
(:class:`FusedVolumeWriter`) and run tracking (MLflow on top of MONAI's ``MLFlowHandler``, and
a plain per-epoch :class:`TrainingHistory` for hosts without MLflow), a wall-clock
:class:`TimeLimit` on training and an :class:`EpochSeed` per training epoch.
"""

from pipeline.handlers.epoch_seed import EpochSeed
from pipeline.handlers.fusion_metric import FusionMetric, FusionMetricHandler, metric_mean, window_pairs
from pipeline.handlers.lesion_report import LesionContrastReport, read_lesion_ratios
from pipeline.handlers.metrics_report import FusionReportWriter
from pipeline.handlers.mlflow_logging import (
    MLflowSliceLogger,
    MLflowTrainingLogger,
    find_mlflow_run,
    fusion_params,
    new_run_name,
    training_params,
)
from pipeline.handlers.slice_metrics import FusionSliceMetrics
from pipeline.handlers.time_limit import TimeLimit
from pipeline.handlers.training_history import TrainingHistory, read_history, run_name
from pipeline.handlers.volume_writer import FusedVolumeWriter

__all__ = [
    "EpochSeed",
    "FusedVolumeWriter",
    "FusionMetric",
    "FusionMetricHandler",
    "FusionReportWriter",
    "FusionSliceMetrics",
    "LesionContrastReport",
    "MLflowSliceLogger",
    "MLflowTrainingLogger",
    "TimeLimit",
    "TrainingHistory",
    "find_mlflow_run",
    "fusion_params",
    "metric_mean",
    "new_run_name",
    "read_history",
    "read_lesion_ratios",
    "run_name",
    "training_params",
    "window_pairs",
]
