"""A wall-clock limit on training, listed among the trainer's handlers like any MONAI handler."""

from __future__ import annotations

import time

import ignite.distributed as idist
from ignite.engine import Engine, Events
from ignite.handlers import TimeLimit as IgniteTimeLimit


class TimeLimit(IgniteTimeLimit):
    """ignite's ``TimeLimit`` with ``attach``, stopping at the end of an epoch: the last one that, at the pace of the
    one before it, ends within ``limit_sec``.

    A run stopped within an epoch (ignite's own check, after any iteration) lost that epoch's validation, history and
    checkpoint, and its ``last.pt`` resumed part-way through an epoch whose batches the resumed run drew again from
    the start. Stopped at an epoch's end, it saves what every epoch saves and resumes exactly. The first epoch always
    runs, however long it takes. The clock starts when the engine starts, not when the config is parsed, so parsing
    and data caching do not count. Under DDP every rank stops after the same epoch, the first at which any rank's
    clock says so: a rank stopping alone would leave the others waiting in their collectives.
    """

    def __init__(self, limit_sec: float) -> None:
        super().__init__(int(limit_sec))  # whole seconds, as ignite takes them
        self.epoch_end = 0.0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._start)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def _start(self, engine: Engine) -> None:
        self.start_time = self.epoch_end = time.time()

    def __call__(self, engine: Engine) -> None:
        now = time.time()
        next_end = now + (now - self.epoch_end)  # the next epoch, as long as this one (with its validation) took
        self.epoch_end = now
        over = next_end - self.start_time > self.limit_sec
        if idist.all_reduce(int(over), op="MAX"):  # the value itself when not distributed
            self.logger.info("Stopping after epoch %d: another would end past the time limit of %d sec",
                             engine.state.epoch, self.limit_sec)
            engine.terminate()
