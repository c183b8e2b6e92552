"""The training time limit: a handler in the trainer's list, its clock started by the run."""

from __future__ import annotations

from ignite.engine import Engine, Events

from pipeline.handlers import TimeLimit


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
