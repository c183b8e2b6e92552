"""The ignite engines of the bundle: the coupled-GAN trainer, its players, its validation and what its checkpoints
carry."""

from pipeline.engines.checkpoint import BestScore, SavedDict, TrainingStateLoader, training_state
from pipeline.engines.trainer import FusionGANTrainer, prepare_fusion_batch
from pipeline.engines.validation import LastEpochValidation

__all__ = ["BestScore", "FusionGANTrainer", "LastEpochValidation", "SavedDict", "TrainingStateLoader",
           "prepare_fusion_batch", "training_state"]
