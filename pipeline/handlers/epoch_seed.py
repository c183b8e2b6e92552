"""Each training epoch's randomness drawn from the run's seed and the epoch's number."""

from __future__ import annotations

import ignite.distributed as idist
import numpy as np
from ignite.engine import Engine, Events
from monai.data.utils import set_rnd
from monai.utils import set_determinism


class EpochSeed:
    """Seeds an epoch's shuffle and random transforms (crops, flips) from ``seed``, the epoch and the rank.

    ``set_determinism`` at start-up alone seeds the run, not its epochs: a run resumed from a training state would
    draw the first epochs' crops again, session after session. Seeded per epoch, a resumed run draws the batches the
    uninterrupted run would have drawn (with ``num_workers=0``; the workers' seeds follow from it otherwise), and
    each DDP rank its own crops.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def epoch_seed(self, epoch: int) -> int:
        """A 31-bit seed for ``epoch`` on this rank, unrelated to the seeds of other runs' epochs."""
        return int(np.random.SeedSequence([self.seed, epoch, idist.get_rank()]).generate_state(1)[0] >> 1)

    def __call__(self, engine: Engine) -> None:
        seed = self.epoch_seed(engine.state.epoch)
        set_determinism(seed)
        set_rnd(engine.state.dataloader.dataset, seed)
