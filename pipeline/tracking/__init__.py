"""MLflow tracking on top of MONAI's ``MLFlowHandler``: fused volumes slice by slice, every GAN loss term."""

from pipeline.tracking.handlers import MLflowSliceLogger, MLflowTrainingLogger, find_mlflow_run

__all__ = ["MLflowSliceLogger", "MLflowTrainingLogger", "find_mlflow_run"]
