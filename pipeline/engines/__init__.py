"""The ignite engines of the bundle: the coupled-GAN trainer, its players and what its checkpoints carry."""

from pipeline.engines.checkpoint import BestScore, SavedDict, TrainingStateLoader, training_state
from pipeline.engines.trainer import FusionGANTrainer, prepare_fusion_batch

__all__ = ["BestScore", "FusionGANTrainer", "SavedDict", "TrainingStateLoader", "prepare_fusion_batch",
           "training_state"]
