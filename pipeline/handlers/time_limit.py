"""A wall-clock limit on training, listed among the trainer's handlers like any MONAI handler."""

from __future__ import annotations

import logging
import time

import ignite.distributed as idist
from ignite.engine import Engine, Events

from pipeline.errors import InputError

logger = logging.getLogger(__name__)


class TimeLimit:
    """Ends training after the last epoch that, at the pace of the one before it, ends within ``limit_sec`` seconds
    (any positive number: ignite's ``TimeLimit`` took whole seconds only, and refused 0.5 as "not a positive integer").

    It decides at each epoch's last iteration and, to stop, makes that epoch the run's last (``state.max_epochs``)
    instead of terminating the run: every handler at the epoch's end then sees it as the last epoch, as it sees the
    last of ``--epochs``; :class:`pipeline.engines.LastEpochValidation` validates it, whatever the interval, so model
    selection sees it. A run stopped within an epoch (ignite's own check, after any iteration) lost that epoch's
    validation, history and checkpoint, and its ``last.pt`` resumed part-way through an epoch whose batches the
    resumed run drew again from the start. Stopped at an epoch's end, it saves what every epoch saves and resumes
    exactly. The first epoch always runs, however long it takes. The clock starts when the engine starts, not when
    the config is parsed, so parsing and data caching do not count. Under DDP every rank stops after the same epoch,
    the first at which any rank's clock says so: a rank stopping alone would leave the others waiting in their
    collectives. Epochs must have a known length (a data loader with ``len``), as the trainer's have.
    """

    def __init__(self, limit_sec: float) -> None:
        if not limit_sec > 0:
            raise InputError(f"time_limit_s {limit_sec}: the time limit is a positive number of seconds")
        self.limit_sec = float(limit_sec)
        self.start_time = self.epoch_end = time.time()

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED(event_filter=_ends_an_epoch), self)

    def _start(self, engine: Engine) -> None:
        self.start_time = self.epoch_end = time.time()

    def __call__(self, engine: Engine) -> None:
        now = time.time()
        next_end = now + (now - self.epoch_end)  # as long as this epoch and the end of the last (validation) took
        self.epoch_end = now
        over = next_end - self.start_time > self.limit_sec
        # Collective on every rank at every epoch's end: the value itself when not distributed.
        if idist.all_reduce(int(over), op="MAX") and engine.state.epoch < engine.state.max_epochs:
            logger.info("Stopping after epoch %d: another would end past the time limit of %g s", engine.state.epoch,
                        self.limit_sec)
            engine.state.max_epochs = engine.state.epoch


def _ends_an_epoch(engine: Engine, iteration: int) -> bool:
    return bool(engine.state.epoch_length) and iteration % engine.state.epoch_length == 0
