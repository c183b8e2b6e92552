"""Validation during training that always scores the run's last epoch, however the run ends."""

from __future__ import annotations

from ignite.engine import Engine, Events
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
