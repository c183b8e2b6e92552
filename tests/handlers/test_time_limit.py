"""The training time limit: a handler in the trainer's list, its clock started by the run, stopping between epochs."""

from __future__ import annotations

import pytest
from ignite.engine import Engine, Events

from pipeline.errors import DcifError
from pipeline.handlers import TimeLimit
from pipeline.handlers import time_limit


def _engine() -> Engine:
    return Engine(lambda engine, batch: None)


@pytest.fixture
def iteration_clock(monkeypatch):
    """A clock at which every iteration of ``engine`` takes one second; ``engine`` set by the test."""

    class Clock:
        engine: Engine | None = None

        def time(self) -> float:
            return 1000.0 + (self.engine.state.iteration if self.engine else 0)

    clock = Clock()
    monkeypatch.setattr(time_limit.time, "time", clock.time)
    return clock


def test_stops_at_the_end_of_the_last_epoch_that_fits(iteration_clock):
    """Epochs of 5 s under a 12 s limit: the second ends at 10 s and a third would end at 15 s, so the run stops
    after the second, with its EPOCH_COMPLETED handlers (validation, checkpoint) run; never within an epoch."""
    engine = iteration_clock.engine = _engine()
    limit = TimeLimit(12.9)
    completed = []
    limit.attach(engine)
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: completed.append(e.state.epoch))
    engine.run(range(5), max_epochs=10)
    assert engine.state.iteration == 10 and completed == [1, 2]


def test_the_clock_starts_with_the_run_and_the_first_epoch_always_runs(iteration_clock):
    engine = iteration_clock.engine = _engine()
    limit = TimeLimit(3)  # shorter than one epoch
    limit.attach(engine)
    limit.start_time = limit.epoch_end = 0.0  # a clock started long ago is restarted when the run starts
    engine.run(range(5), max_epochs=4)
    assert engine.state.iteration == 5 and engine.state.epoch == 1

    fits = TimeLimit(3600)
    engine = iteration_clock.engine = _engine()
    fits.attach(engine)
    engine.run(range(5), max_epochs=4)
    assert engine.state.iteration == 20  # not stopped


def test_every_rank_stops_when_any_rank_is_over(monkeypatch):
    """Under DDP the ranks' clocks differ: the largest decides, so no rank waits alone in a collective."""
    other_rank_over_from = 2  # another rank's clock says stop after this epoch; this one's never does
    engine = _engine()
    monkeypatch.setattr(time_limit.idist, "all_reduce",
                        lambda value, op: max(value, int(engine.state.epoch >= other_rank_over_from)))
    limit = TimeLimit(3600)
    limit.attach(engine)
    engine.run(range(5), max_epochs=4)
    assert engine.state.epoch == other_rank_over_from and engine.state.iteration == 10


def test_a_limit_is_any_positive_number_of_seconds(iteration_clock):
    """``--time_limit_s 0.5`` was refused as "should be a positive integer" (ignite takes whole seconds)."""
    engine = iteration_clock.engine = _engine()
    TimeLimit(0.5).attach(engine)  # epochs of 1 s: the first always runs
    engine.run(range(1), max_epochs=4)
    assert engine.state.epoch == 1 and engine.state.max_epochs == 1  # the run's last epoch, as handlers see it

    for bad in (0, -3):
        with pytest.raises(DcifError) as refused:
            TimeLimit(bad)
        assert str(refused.value) == f"time_limit_s {bad}: the time limit is a positive number of seconds"
