"""The ignite engines of the bundle: the coupled-GAN trainer, its players, its validation and what its checkpoints
carry."""

from pipeline.engines.checkpoint import (
    BestScore,
    ModelCard,
    SavedDict,
    TrainingStateLoader,
    TrainingStateSaver,
    training_state,
)
from pipeline.engines.trainer import FusionGANTrainer, prepare_fusion_batch
from pipeline.engines.validation import LastEpochValidation, validation_sampler

__all__ = ["BestScore", "FusionGANTrainer", "LastEpochValidation", "ModelCard", "SavedDict", "TrainingStateLoader",
           "TrainingStateSaver", "prepare_fusion_batch", "training_state", "validation_sampler"]
