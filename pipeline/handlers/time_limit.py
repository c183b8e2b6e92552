"""A wall-clock limit on training, listed among the trainer's handlers like any MONAI handler."""

from __future__ import annotations

import time

import ignite.distributed as idist
from ignite.engine import Engine, Events
from ignite.handlers import TimeLimit as IgniteTimeLimit


class TimeLimit(IgniteTimeLimit):
    """ignite's ``TimeLimit`` with ``attach``: stops the run, after the iteration under way, once ``limit_sec`` have passed.

    The clock starts when the engine starts, not when the config is parsed, so parsing and data
    caching do not count. Fractional seconds are rounded down, as ignite takes whole seconds. Under DDP every
    rank stops after the same iteration, the first at which any rank's clock is over: a rank stopping alone
    would leave the others waiting in their collectives.
    """

    def __init__(self, limit_sec: float) -> None:
        super().__init__(int(limit_sec))

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def _start(self, engine: Engine) -> None:
        self.start_time = time.time()

    def __call__(self, engine: Engine) -> None:
        over = time.time() - self.start_time > self.limit_sec
        if idist.all_reduce(int(over), op="MAX"):  # the value itself when not distributed
            self.logger.info("Reached the time limit: %d sec. Stop training", self.limit_sec)
            engine.terminate()
