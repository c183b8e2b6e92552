"""A resumable training state loads into the configured optimizers as they would have stepped on."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import torch
from ignite.engine import Engine, Events
from monai.handlers import CheckpointSaver

from pipeline.engines import BestScore, TrainingStateLoader, training_state


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


def _validator(score: float) -> Engine:
    """An engine whose one epoch ends with ``score`` as its key metric."""
    validator = Engine(lambda engine, batch: None)
    validator.add_event_handler(Events.ITERATION_COMPLETED, lambda engine: engine.state.metrics.update(val=score))
    return validator


def test_a_resumed_run_replaces_the_best_model_only_with_a_better_one(tmp_path):
    net = torch.nn.Linear(1, 1)
    for score, replaced in ((0.5, False), (0.95, True), (0.5, None)):  # None: no best model on disk to keep
        folder = tmp_path / str(len(list(tmp_path.iterdir())))
        folder.mkdir()
        if replaced is not None:
            (folder / "model.pt").write_bytes(b"the run's best so far")
        validator = _validator(score)
        saver = CheckpointSaver(str(folder), {"model": net}, save_key_metric=True, key_metric_name="val",
                                key_metric_filename="model.pt")
        saver.attach(validator)
        best = BestScore(validator, saver, folder / "model.pt")
        best.load_state_dict({"best_metric": 0.9, "best_metric_epoch": 3})  # the run so far, restored
        validator.run([0], max_epochs=1)
        kept = (folder / "model.pt").read_bytes() == b"the run's best so far"  # and a model is there in every case
        assert kept == (replaced is False)
        assert best.state_dict() == {"best_metric": 0.9, "best_metric_epoch": 3}


def test_a_state_without_the_best_score_still_resumes(tmp_path, caplog):
    net, trainer = torch.nn.Linear(1, 1), Engine(lambda engine, batch: None)
    old = {"model": torch.nn.Linear(1, 1).state_dict()}
    torch.save(old, tmp_path / "old.pt")
    best = BestScore(_validator(0.0), saver=None, best_model=tmp_path / "model.pt")
    with caplog.at_level("WARNING"):
        TrainingStateLoader(str(tmp_path / "old.pt"), {"model": net, "best": best})(trainer)
    assert torch.equal(net.weight, old["model"]["weight"]) and "predates the training state's best" in caplog.text
