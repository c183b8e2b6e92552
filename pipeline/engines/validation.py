"""Validation during training: it always scores the run's last epoch, however the run ends, and under torchrun
each rank scores its share of the studies."""

from __future__ import annotations

from collections.abc import Sized

import torch.distributed as dist
from ignite.engine import Engine, Events
from monai.data import DistributedSampler
from monai.engines import Evaluator
from monai.handlers import ValidationHandler


class LastEpochValidation(ValidationHandler):
    """MONAI's ``ValidationHandler`` every ``interval`` epochs and at the run's last epoch.

    Model selection (the best model's saver listens to the validator) sees only the epochs validated: with
    ``--epochs 7`` at interval 5, epochs 6 and 7 were never scored, and a run shorter than the interval wrote no
    ``model.pt`` at all, leaving whatever the folder held before (a copied bundle's shipped weights) as its result.
    The last epoch is ``state.max_epochs``, which :class:`pipeline.handlers.TimeLimit` lowers to the epoch it stops
    after, so a run ended by its time limit validates its last epoch too.
    """

    def __init__(self, interval: int, validator: Evaluator | None = None) -> None:
        super().__init__(interval, validator, epoch_level=True)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED(event_filter=self._due), self)

    def _due(self, engine: Engine, epoch: int) -> bool:
        return epoch % self.interval == 0 or epoch == engine.state.max_epochs


def validation_sampler(dataset: Sized, num_replicas: int | None = None,
                       rank: int | None = None) -> DistributedSampler | None:
    """This rank's share of the validation studies under torchrun (every rank scored every study), or None: all of
    them, where there are fewer studies than ranks.

    The metrics gather every rank's values before they reduce them (MONAI's ``Cumulative``), so the scores are the
    whole set's. A rank given no study would skip its validation and leave the others waiting in that gather (and
    MONAI's sampler refuses such a split), so with fewer studies than ranks each rank scores them all: the gathered
    copies leave the means as they are.
    """
    ranks = num_replicas if num_replicas is not None else dist.get_world_size()
    if len(dataset) < ranks:
        return None
    return DistributedSampler(dataset, even_divisible=False, num_replicas=ranks, rank=rank, shuffle=False)
