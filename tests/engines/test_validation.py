"""Validation during training scores every interval-th epoch and the run's last, however the run ends, and under
torchrun each rank its share of the studies."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from ignite.engine import Engine, Events
from monai.engines import SupervisedEvaluator

from pipeline.engines import LastEpochValidation, validation_sampler
from pipeline.handlers import TimeLimit, time_limit


def _validated_epochs(max_epochs: int, interval: int, limit: TimeLimit | None = None,
                      clock: SimpleNamespace | None = None) -> list[int]:
    """The training epochs a run of ``max_epochs`` 5-iteration epochs validates; ``clock.trainer`` is its trainer."""
    trainer = Engine(lambda engine, batch: None)
    validator = SupervisedEvaluator(device="cpu", val_data_loader=[{"image": torch.zeros(1, 1)}],
                                    network=torch.nn.Identity())
    validated: list[int] = []
    validator.add_event_handler(Events.COMPLETED, lambda engine: validated.append(engine.state.epoch))
    LastEpochValidation(interval, validator).attach(trainer)
    if limit is not None:
        limit.attach(trainer)
    if clock is not None:
        clock.trainer = trainer
    trainer.run(range(5), max_epochs=max_epochs)
    return validated


@pytest.mark.parametrize(("epochs", "expected"), [(1, [1]), (7, [5, 7]), (10, [5, 10])])
def test_the_last_epoch_is_validated_whatever_the_interval(epochs, expected):
    """At interval 5, a 1-epoch run wrote no model at all, and a 7-epoch run never scored epochs 6-7."""
    assert _validated_epochs(epochs, interval=5) == expected


def test_a_run_ended_by_its_time_limit_validates_its_last_epoch(monkeypatch):
    """Iterations of 1 s, epochs of 5 under a 12.5 s limit: the run stops after epoch 2, and validates it though the
    interval is 5."""
    clock = SimpleNamespace(trainer=None)
    monkeypatch.setattr(time_limit.time, "time",
                        lambda: 1000.0 + (clock.trainer.state.iteration if clock.trainer else 0))
    assert _validated_epochs(10, interval=5, limit=TimeLimit(12.5), clock=clock) == [2]
    assert clock.trainer.state.iteration == 10


@pytest.mark.parametrize(("studies", "ranks", "shares"), [
    (5, 2, [[0, 2, 4], [1, 3]]),
    (2, 2, [[0], [1]]),
    (1, 2, None),  # a rank with no study would leave the others waiting in the metrics' gather
    (3, 4, None),
])
def test_each_rank_validates_its_share_of_the_studies(studies, ranks, shares):
    samplers = [validation_sampler(range(studies), num_replicas=ranks, rank=rank) for rank in range(ranks)]
    if shares is None:
        assert samplers == [None] * ranks  # every rank scores every study
    else:
        assert [list(sampler) for sampler in samplers] == shares
