"""Ignite/MONAI workflow pieces the bundle configs name with ``_target_``."""

from pipeline.engines.checkpoint import SavedDict
from pipeline.engines.lesion_report import LesionContrastReport, read_lesion_ratios
from pipeline.engines.outputs import FusedVolumeWriter, window_pairs
from pipeline.engines.report import FusionReportWriter
from pipeline.engines.slice_metrics import FusionSliceMetrics
from pipeline.engines.trainer import FusionGANTrainer, prepare_fusion_batch

__all__ = [
    "FusedVolumeWriter",
    "FusionGANTrainer",
    "FusionReportWriter",
    "FusionSliceMetrics",
    "LesionContrastReport",
    "SavedDict",
    "prepare_fusion_batch",
    "read_lesion_ratios",
    "window_pairs",
]
