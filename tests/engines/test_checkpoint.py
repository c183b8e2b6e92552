"""A resumable training state loads into the configured optimizers as they would have stepped on, keeps the best
model with the score it was saved at, and refuses in one line a file it cannot resume from."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from ignite.engine import Engine, Events
from monai.handlers import CheckpointSaver

from pipeline.engines import BestScore, ModelCard, TrainingStateLoader, TrainingStateSaver, training_state
from pipeline.errors import CheckpointError


def _adam(param: torch.nn.Parameter, fused: bool) -> torch.optim.Adam:
    return torch.optim.Adam([param], lr=1e-2, fused=fused)


def _step(optimizer: torch.optim.Optimizer, param: torch.nn.Parameter, grad: torch.Tensor) -> None:
    param.grad = torch.empty_like(param).copy_(grad)
    optimizer.step()


def test_state_saved_from_contiguous_weights_resumes_fused_and_channels_last():
    """A state written by a non-fused optimizer over contiguous weights (older code), loaded for channels-last ones
    and fused Adam: fused stays on, and the steps equal an optimizer that never changed layout."""
    torch.manual_seed(0)
    grads = torch.randn(4, 6, 5, 3, 3)
    reference = torch.nn.Parameter(torch.randn(6, 5, 3, 3))
    old_param = torch.nn.Parameter(reference.detach().clone())
    reference_adam, old_adam = _adam(reference, fused=False), _adam(old_param, fused=False)
    for grad in grads[:2]:
        _step(reference_adam, reference, grad)
        _step(old_adam, old_param, grad)
    saved = copy.deepcopy(old_adam.state_dict())

    param = torch.nn.Parameter(old_param.detach().clone().contiguous(memory_format=torch.channels_last))
    g_adam, d_adam = _adam(param, fused=True), _adam(torch.nn.Parameter(torch.zeros(1)), fused=True)
    gan = SimpleNamespace(generator=torch.nn.Module(), d1=torch.nn.Module(), d2=torch.nn.Module())
    state = training_state(gan, g_adam, d_adam, trainer=None)
    state["g_optimizer"].load_state_dict(saved)

    assert g_adam.param_groups[0]["fused"] is True
    assert g_adam.state[param]["exp_avg"].stride() == param.stride()
    for grad in grads[2:]:
        _step(reference_adam, reference, grad)
        _step(g_adam, param, grad)
    assert (param - reference).abs().max() < 1e-6


class _Validator(Engine):
    """An engine validating as MONAI's evaluator does: ``run(epoch, score)`` scores that training epoch, keeps the best
    (``best_metric``, ``best_metric_epoch``) before its handlers see it, and names its key metric ``val``."""

    def __init__(self) -> None:
        super().__init__(lambda engine, score: engine.state.metrics.update(val=score))
        self.state.key_metric_name, self.state.best_metric, self.state.best_metric_epoch = "val", -1.0, -1

        @self.on(Events.EPOCH_COMPLETED)
        def _compare(engine: Engine) -> None:
            state = engine.state
            if state.best_metric_epoch == -1 or state.metrics["val"] > state.best_metric:
                state.best_metric, state.best_metric_epoch = state.metrics["val"], state.epoch

    def run(self, epoch: int, score: float) -> None:  # type: ignore[override]
        self.state.max_epochs, self.state.epoch, self.state.iteration = epoch, epoch - 1, 0
        super().run([score])


def _selection(folder, net: torch.nn.Module | None = None) -> tuple[_Validator, BestScore, ModelCard]:
    """The bundle's model selection: a validator, its best-model saver with a card, and the score a state keeps."""
    validator, card = _Validator(), ModelCard(windows=["lung"])
    saver = CheckpointSaver(str(folder), {"model": net or torch.nn.Linear(1, 1), "card": card}, save_key_metric=True,
                            key_metric_filename="model.pt")
    saver.attach(validator)
    card.attach(validator)
    return validator, BestScore(validator, saver, folder / "model.pt"), card


def _card(folder) -> dict:
    return torch.load(folder / "model.pt", weights_only=True)["card"]


def test_the_best_models_card_records_its_epoch_and_validation_scores(tmp_path):
    validator, _, _ = _selection(tmp_path)
    for epoch, score in ((1, 0.2), (2, 0.7), (3, 0.4)):
        validator.run(epoch, score)
    assert _card(tmp_path) == {"windows": ["lung"], "epoch": 2, "validation": {"val": 0.7}}


def test_a_resumed_run_replaces_its_best_model_only_with_a_better_one(tmp_path):
    for score, replaced in ((0.5, False), (0.95, True)):
        folder = tmp_path / str(score)
        folder.mkdir()
        first, best, _ = _selection(folder)
        first.run(3, 0.9)  # the run so far: its best model, epoch 3
        state = best.state_dict()

        validator, resumed, _ = _selection(folder)
        resumed.load_state_dict(state)
        validator.run(4, score)
        assert _card(folder)["epoch"] == (4 if replaced else 3)
        assert resumed.state_dict() == ({"best_metric": 0.95, "best_metric_epoch": 4} if replaced else state)


def test_a_best_score_resumed_into_another_folder_selects_afresh_there(tmp_path):
    """The score stays with the folder of its model: kept elsewhere, it froze whatever model.pt sat here."""
    torch.save({"model": {}, "card": {"epoch": 2, "validation": {"val": 0.5}}}, tmp_path / "model.pt")  # epoch 2's
    for folder in (tmp_path, tmp_path / "new"):  # a model of another epoch there; none
        folder.mkdir(exist_ok=True)
        validator, best, _ = _selection(folder)
        best.load_state_dict({"best_metric": 0.99, "best_metric_epoch": 1})  # scored in another folder
        validator.run(3, 0.6)
        assert _card(folder)["epoch"] == 3
        assert best.state_dict() == {"best_metric": 0.6, "best_metric_epoch": 3}  # the score of the model here


def test_a_run_says_when_it_starts_with_a_best_model_not_its_own(tmp_path, caplog):
    """A copied bundle's shipped model.pt, another run's: named, and replaced at the first validation."""
    trainer = Engine(lambda engine, batch: None)
    (tmp_path / "model.pt").write_bytes(b"shipped weights")
    _, best, _ = _selection(tmp_path)
    best.attach(trainer)
    with caplog.at_level("WARNING"):
        trainer.run([0], max_epochs=2)
    assert caplog.text.count("model.pt is not this run's best model") == 1 and str(tmp_path) in caplog.text


def test_a_resumed_optimizer_runs_with_the_configured_settings_and_the_saved_moments():
    """``--lr_g`` on a resume: the state's learning rate won, while the history recorded the new one."""
    torch.manual_seed(0)
    param = torch.nn.Parameter(torch.randn(3, 4))
    before = torch.optim.Adam([param], lr=5e-4, betas=(0.5, 0.999))
    _step(before, param, torch.randn(3, 4))
    saved = copy.deepcopy(before.state_dict())

    settings = {"lr": 1e-4, "betas": (0.9, 0.99), "eps": 1e-6, "weight_decay": 0.01}
    g_adam, d_adam = torch.optim.Adam([param], **settings), torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])
    gan = SimpleNamespace(generator=torch.nn.Module(), d1=torch.nn.Module(), d2=torch.nn.Module())
    training_state(gan, g_adam, d_adam, trainer=None)["g_optimizer"].load_state_dict(saved)

    group = g_adam.param_groups[0]
    assert {key: group[key] for key in settings} == settings
    assert torch.equal(g_adam.state[param]["exp_avg"], saved["state"][0]["exp_avg"])  # the moments are the state's


def _state_file(tmp_path, **content) -> str:
    path = tmp_path / "state.pt"
    torch.save(content, path)
    return str(path)


@pytest.mark.parametrize("case", ["model file", "another width", "nothing to train"])
def test_a_state_that_cannot_resume_the_run_is_refused_in_one_line(case, tmp_path):
    net, trainer = torch.nn.Linear(2, 8), Engine(lambda engine, batch: None)
    trainer.state.max_epochs = 2
    content = {"model": net.state_dict(), "trainer": {"epoch_length": 3, "iteration": 3, "max_epochs": 2}}
    if case == "model file":
        content, expected = {"model": net.state_dict(), "card": {}}, "a model file, not a training state (it holds"
    elif case == "another width":
        content["model"], expected = torch.nn.Linear(2, 16).state_dict(), "model.weight is (16, 2) there, (8, 2) conf"
    else:
        content["trainer"]["iteration"], expected = 6, "the state is at epoch 2, and --epochs 2 leaves nothing to train"
    path = _state_file(tmp_path, **content)
    with pytest.raises(CheckpointError) as raised:  # before the run: its handlers would log a traceback
        TrainingStateLoader(path, {"model": net, "trainer": trainer}).attach(trainer)
    assert str(raised.value).startswith(path) and expected in str(raised.value) and "\n" not in str(raised.value)


@pytest.mark.parametrize("content, expected", [
    (b"not a state", "not a training state file"),
    (b"", "empty file (0 bytes)"),
])
def test_an_unreadable_state_says_what_it_is_not_how_to_load_it_unsafely(content, expected, tmp_path):
    """torch's refusal of a damaged file read 'Weights only load failed ... Re-running torch.load with weights_only set
    to False will likely succeed, but it can result in arbitrary code execution': advice to load it unsafely."""
    net, trainer = torch.nn.Linear(2, 8), Engine(lambda engine, batch: None)
    path = tmp_path / "state.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as raised:
        TrainingStateLoader(str(path), {"model": net, "trainer": trainer}).attach(trainer)
    assert str(raised.value) == f"{path}: not a readable training state ({expected})"


def test_a_resumed_run_keeps_as_many_epoch_states_as_an_uninterrupted_one(tmp_path):
    """MONAI's saver deletes only its own files: each resumed session left its predecessor's behind."""
    for epoch in (1, 2, 5):  # two earlier sessions' states, and one past the resume point (another branch)
        (tmp_path / f"checkpoint_epoch={epoch}.pt").write_bytes(b"state")
    trainer = Engine(lambda engine, batch: None)
    trainer.load_state_dict({"iteration": 4, "epoch_length": 2, "max_epochs": 3})  # resumed after epoch 2
    TrainingStateSaver(str(tmp_path), {"trainer": trainer, "net": torch.nn.Linear(1, 1)}, save_interval=1,
                       n_saved=1).attach(trainer)
    trainer.run([0, 1], max_epochs=3)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["checkpoint_epoch=3.pt", "checkpoint_epoch=5.pt"]


@pytest.mark.parametrize("earlier", ["last.pt", "checkpoint_epoch=3.pt"])
def test_a_new_run_into_an_earlier_runs_folder_stops_before_overwriting_its_state(earlier, tmp_path):
    """A second training into the same --output_dir, without --resume_from, trained from epoch 1 and replaced the
    first run's last.pt and checkpoints, saying nothing."""
    (tmp_path / earlier).write_bytes(b"the earlier run's state")
    trainer = Engine(lambda engine, batch: None)
    saver = TrainingStateSaver(str(tmp_path), {"trainer": trainer}, save_interval=1, n_saved=1, save_final=True,
                               final_filename="last.pt", fresh=True)
    with pytest.raises(CheckpointError, match=f"{tmp_path / earlier}: an earlier training's state is in this run's"):
        saver.attach(trainer)
    assert (tmp_path / earlier).read_bytes() == b"the earlier run's state"
    resumed = TrainingStateSaver(str(tmp_path), {"trainer": trainer}, save_interval=1, n_saved=1, save_final=True,
                                 final_filename="last.pt", fresh=False)
    resumed.attach(trainer)  # a resumed run writes there as before
    fresh_folder = TrainingStateSaver(str(tmp_path / "new"), {"trainer": trainer}, save_interval=1, fresh=True)
    fresh_folder.attach(trainer)


def test_a_state_without_the_best_score_still_resumes(tmp_path, caplog):
    net, trainer = torch.nn.Linear(1, 1), Engine(lambda engine, batch: None)
    old = {"model": torch.nn.Linear(1, 1).state_dict()}
    torch.save(old, tmp_path / "old.pt")
    best = BestScore(_Validator(), saver=None, best_model=tmp_path / "model.pt")
    with caplog.at_level("WARNING"):
        TrainingStateLoader(str(tmp_path / "old.pt"), {"model": net, "best": best})(trainer)
    assert torch.equal(net.weight, old["model"]["weight"]) and "predates the training state's best" in caplog.text


def test_a_resume_whose_data_make_epochs_of_another_length_says_which_length_it_keeps(tmp_path, caplog):
    """A state of 258-iteration epochs resumed on two studies ran 258 iterations an epoch, cycling a few batches,
    saying nothing."""
    earlier = Engine(lambda engine, batch: None)
    earlier.run([0, 1, 2], max_epochs=1)
    torch.save({"trainer": earlier.state_dict()}, tmp_path / "state.pt")
    trainer = Engine(lambda engine, batch: None)
    trainer.state.epoch_length, trainer.state.max_epochs = 1, 3
    with caplog.at_level("WARNING"):
        TrainingStateLoader(str(tmp_path / "state.pt"), {"trainer": trainer})(trainer)
    assert trainer.state.epoch_length == 3
    assert "its epochs were 3 iterations, this run's data make 1: the run keeps 3" in caplog.text
    caplog.clear()
    same = Engine(lambda engine, batch: None)
    same.state.epoch_length, same.state.max_epochs = 3, 3
    TrainingStateLoader(str(tmp_path / "state.pt"), {"trainer": same})(same)
    assert "iterations" not in caplog.text
