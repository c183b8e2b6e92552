"""The training time limit: a handler in the trainer's list, its clock started by the run."""

from __future__ import annotations

from ignite.engine import Engine, Events

from pipeline.handlers import TimeLimit
from pipeline.handlers import time_limit


def _engine() -> Engine:
    return Engine(lambda engine, batch: None)


def test_stops_after_the_limit_and_not_before():
    limit = TimeLimit(1.9)  # whole seconds, as ignite takes them
    assert limit.limit_sec == 1
    engine = _engine()
    limit.attach(engine)
    limit.start_time = 0.0  # a clock started long ago is restarted when the run starts
    engine.run(range(5), max_epochs=2)
    assert engine.state.iteration == 10  # the run took far less than a second: not stopped

    late = TimeLimit(1)
    engine = _engine()
    late.attach(engine)
    engine.add_event_handler(Events.ITERATION_STARTED, lambda e: setattr(late, "start_time", late.start_time - 2))
    engine.run(range(5), max_epochs=2)
    assert engine.state.iteration == 1  # stopped after the first iteration once over the limit


def test_every_rank_stops_when_any_rank_is_over(monkeypatch):
    """Under DDP the ranks' clocks differ: the largest decides, so no rank waits alone in a collective."""
    other_rank_over_from = 3  # another rank's clock passes the limit at this iteration; this one's never does
    engine = _engine()
    monkeypatch.setattr(time_limit.idist, "all_reduce",
                        lambda value, op: max(value, int(engine.state.iteration >= other_rank_over_from)))
    limit = TimeLimit(3600)
    limit.attach(engine)
    engine.run(range(5), max_epochs=2)
    assert engine.state.iteration == other_rank_over_from
