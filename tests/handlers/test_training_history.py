"""The per-epoch training history file: loss means, validation metrics, rewritten after each epoch."""

from __future__ import annotations

import json

import pytest
from ignite.engine import Engine, Events

from pipeline.handlers import TrainingHistory, read_history


def _trainer(losses: list[float]) -> Engine:
    """An engine whose iterations report a decollated output like FusionGANTrainer's."""
    values = iter(losses)

    def step(engine, batch):
        value = next(values)
        return [{"loss": value, "d_loss": 2 * value, "g_adv1": 1.0, "ct": "not a number"}] * 2

    return Engine(step)


def test_history_keeps_epoch_means_and_the_validation_of_that_epoch(tmp_path):
    trainer = _trainer([1.0, 3.0, 5.0, 7.0])
    validator = Engine(lambda engine, batch: None)

    @validator.on(Events.COMPLETED)
    def score(engine):
        engine.state.metrics = {"val_QABF": 0.1 * trainer.state.epoch, "val_MI": float("nan")}

    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda engine: validator.run([0]))
    path = tmp_path / "train" / "history.json"
    TrainingHistory(path, params={"alpha": 100.0}, validator=validator).attach(trainer)
    trainer.run([0, 1], max_epochs=2)

    history = read_history(path)
    assert history["params"] == {"alpha": 100.0}
    first, second = history["epochs"]
    assert (first["epoch"], first["loss"], first["d_loss"], first["iterations"]) == (1, 2.0, 4.0, 2)
    assert second["loss"] == 6.0 and second["g_adv1"] == 1.0
    assert first["val_QABF"] == 0.1 and second["val_QABF"] == 0.2
    assert "val_MI" not in first and "ct" not in first  # non-finite and non-numeric values are left out
    assert first["seconds"] <= second["seconds"]
    assert not [p for p in path.parent.iterdir() if p.name != "history.json"]  # no temporary file left


def test_history_of_a_run_stopped_mid_epoch_keeps_the_finished_epochs(tmp_path):
    trainer = _trainer([1.0, 1.0, 1.0])
    path = tmp_path / "history.json"
    TrainingHistory(path).attach(trainer)

    @trainer.on(Events.ITERATION_COMPLETED(once=3))
    def stop(engine):
        engine.terminate()

    trainer.run([0, 1], max_epochs=5)
    epochs = json.loads(path.read_text())["epochs"]
    assert [row["epoch"] for row in epochs][0] == 1 and epochs[0]["iterations"] == 2


@pytest.mark.parametrize("restored", ["before the run", "at STARTED, after the history"])
def test_a_resumed_run_keeps_the_epochs_before_its_resume_point(tmp_path, restored):
    path = tmp_path / "history.json"
    first = _trainer([1.0] * 6)
    TrainingHistory(path).attach(first)
    first.run([0, 1], max_epochs=3)

    resumed = _trainer([5.0] * 4)
    TrainingHistory(path).attach(resumed)
    state = {"epoch": 2, "epoch_length": 2, "max_epochs": 4}
    if restored == "before the run":
        resumed.load_state_dict(state)
    else:  # the bundle's CheckpointLoader: a STARTED handler attached after the trainer's own handlers
        resumed.add_event_handler(Events.STARTED, lambda engine: engine.load_state_dict(state))
    resumed.run([0, 1])
    epochs = read_history(path)["epochs"]
    assert [row["epoch"] for row in epochs] == [1, 2, 3, 4]
    assert [row["loss"] for row in epochs] == [1.0, 1.0, 5.0, 5.0]  # epoch 3 of the first run is redone
