"""Run tracking: MLflow on top of MONAI's ``MLFlowHandler`` (fused volumes slice by slice, every GAN
loss term), and a plain per-epoch history file for hosts without MLflow."""

from pipeline.tracking.handlers import MLflowSliceLogger, MLflowTrainingLogger, find_mlflow_run, fusion_params
from pipeline.tracking.history import TrainingHistory, read_history, run_name

__all__ = ["MLflowSliceLogger", "MLflowTrainingLogger", "TrainingHistory", "find_mlflow_run", "fusion_params", "read_history", "run_name"]
