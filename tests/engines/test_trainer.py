"""The training engine updates both players of every ablation variant and reports each loss term."""

from __future__ import annotations

import pytest
import torch
from monai.data import DataLoader, Dataset
from monai.inferers import SimpleInferer
from monai.utils.enums import AdversarialIterationEvents

from pipeline.engines import FusionGANTrainer
from pipeline.engines.trainer import frozen
from pipeline.losses import DetailLoss, DiscriminatorLoss, GeneratorLoss
from pipeline.networks import DCIFGAN


def _loader(n: int = 4, size: int = 16) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    items = [{"ct": torch.rand(1, size, size, generator=generator), "pet": torch.rand(1, size, size, generator=generator)}
             for _ in range(n)]
    return DataLoader(Dataset(items), batch_size=2)


def _trainer(variant: str, **options) -> tuple[FusionGANTrainer, DCIFGAN]:
    torch.manual_seed(0)
    model = DCIFGAN(variant=variant, width=8, num_heads=2, window_size=4, depths=(2, 2, 2))
    d_params = model.discriminator_parameters()
    trainer = FusionGANTrainer(
        device="cpu", max_epochs=1, train_data_loader=_loader(), model=model,
        g_optimizer=torch.optim.Adam(model.generator.parameters(), lr=1e-3),
        d_optimizer=torch.optim.Adam(d_params, lr=1e-3),
        **{"g_loss_function": GeneratorLoss(alpha=10.0), "d_loss_function": DiscriminatorLoss(), **options},
    )
    return trainer, model


@pytest.mark.parametrize("variant", ["network1", "network4"])
def test_one_epoch_updates_generator_and_discriminators(variant):
    trainer, model = _trainer(variant)
    before_g = [p.detach().clone() for p in model.generator.parameters()]
    before_d = [p.detach().clone() for p in model.discriminator_parameters()]
    trainer.run()
    after_d = list(model.discriminator_parameters())
    assert any(not b.equal(a) for b, a in zip(before_g, model.generator.parameters()))
    assert all(not b.equal(a) for b, a in zip(before_d, after_d) if a.requires_grad and a.ndim > 1)
    assert trainer.state.iteration == 2


def test_output_is_decollated_with_every_loss_term():
    trainer, _ = _trainer("network4")
    trainer.run()
    output = trainer.state.output
    assert isinstance(output, list) and len(output) == 2  # one dict per sample, as MONAI handlers expect
    keys = {"loss", "d_loss", "g_adv1", "g_adv2", "g_content1", "g_content2", "d_d1", "d_d2"}
    assert keys <= output[0].keys()
    assert all(isinstance(output[0][k], float) and output[0][k] == output[0][k] for k in keys)
    assert output[0]["pred"].shape == (1, 16, 16)


def test_the_generator_loss_gets_each_samples_ct_window():
    seen = []

    class Recording(GeneratorLoss):
        def forward(self, *args, window=None):
            seen.append(window)
            return super().forward(*args, window=window)

    items = [{"ct": torch.rand(1, 16, 16), "pet": torch.rand(1, 16, 16), "window": w} for w in (0, 1, 1, 0)]
    loss = Recording(alpha=10.0, detail_weight=1.0,
                     detail=DetailLoss("saliency", window_target_args={"mediastinal": {"high": 0.45}}))
    trainer, _ = _trainer("network4", g_loss_function=loss)
    trainer.data_loader = DataLoader(Dataset(items), batch_size=2)
    trainer.run()  # a window-dependent target refuses a batch without the windows
    assert [w.tolist() for w in seen] == [[0, 1], [1, 0]]


def test_each_iteration_runs_the_generator_once(monkeypatch):
    trainer, model = _trainer("network4")
    calls = []
    streams = model.generator.streams
    monkeypatch.setattr(model.generator, "streams", lambda ct, pet: calls.append(1) or streams(ct, pet))
    trainer.players = trainer.players._replace(streams=model.generator.streams)
    trainer.run()
    assert len(calls) == trainer.state.iteration == 2


def test_the_generator_runs_through_the_configured_inferer():
    """``train#inferer`` is the bundle's standard id: the trainer must call it, not the streams directly."""
    class CountingInferer(SimpleInferer):
        calls = 0

        def __call__(self, inputs, network, *args, **kwargs):
            CountingInferer.calls += 1
            return super().__call__(inputs, network, *args, **kwargs)

    trainer, _ = _trainer("network4", inferer=CountingInferer())
    trainer.run()
    assert CountingInferer.calls == trainer.state.iteration == 2


@pytest.mark.parametrize("floor, updated", [(None, 1.0), (1e9, 0.0)])
def test_a_discriminator_below_its_loss_floor_waits_for_the_generators(floor, updated):
    trainer, model = _trainer("network4", d_loss_floor=floor)
    d_params = list(model.discriminator_parameters())
    before = [p.detach().clone() for p in d_params]
    trainer.run()
    assert all(o["d_updated"] == updated for o in trainer.state.output)
    changed = [not b.equal(a) for b, a in zip(before, d_params) if a.ndim > 1]
    assert all(changed) if updated else not any(changed)
    assert trainer.state.output[0]["d_loss"] > 0  # the loss is still reported while D waits


@pytest.mark.parametrize("floor, other_rank, updated", [(0.01, -10.0, 0.0), (4.0, 10.0, 1.0)])
def test_under_ddp_the_ranks_mean_loss_decides_the_floor(monkeypatch, floor, other_rank, updated):
    """Every rank takes the branch the ranks' mean loss gives, whatever its own: the update is a collective."""
    from pipeline.engines import trainer as trainer_module

    monkeypatch.setattr(trainer_module.idist, "get_world_size", lambda: 2)
    monkeypatch.setattr(trainer_module.idist, "all_reduce", lambda value: value + other_rank)
    trainer, _ = _trainer("network4", d_loss_floor=floor)
    trainer.run()
    for output in trainer.state.output:
        alone = float(output["d_loss"] >= floor)  # what this rank would do by itself
        assert alone != updated and output["d_updated"] == updated


def test_adversarial_iteration_events_fire_in_training_order():
    """MONAI's ``AdversarialIterationEvents``: a handler written for ``AdversarialTrainer`` attaches here."""
    trainer, _ = _trainer("network4")
    fired = []
    for event in AdversarialIterationEvents:
        trainer.add_event_handler(event, lambda engine, event=event: fired.append(event.name))
    trainer.add_event_handler(AdversarialIterationEvents.GENERATOR_FORWARD_COMPLETED,
                              lambda engine: fired.append("pred" in engine.state.output))
    trainer.run()
    one_iteration = ["GENERATOR_FORWARD_COMPLETED", True,
                     "DISCRIMINATOR_LOSS_COMPLETED", "DISCRIMINATOR_BACKWARD_COMPLETED", "DISCRIMINATOR_MODEL_COMPLETED",
                     "GENERATOR_LOSS_COMPLETED", "GENERATOR_BACKWARD_COMPLETED", "GENERATOR_MODEL_COMPLETED"]
    assert fired == one_iteration * trainer.state.iteration


def test_amp_is_trainers_switch_with_bfloat16_by_default_and_off_on_the_cpu():
    trainer, _ = _trainer("network4", amp=True)
    assert trainer.amp is False and trainer.amp_kwargs == {"dtype": torch.bfloat16}
    trainer, _ = _trainer("network4", amp=True, amp_kwargs={"dtype": torch.float16})
    assert trainer.amp_kwargs == {"dtype": torch.float16}
    with trainer._autocast():
        assert not torch.is_autocast_enabled("cpu")  # the CPU trains in float32


def test_the_generator_step_computes_no_discriminator_weight_gradient():
    """Only the D step's backward reaches the critics' weights; the G step freezes them and restores them after."""
    trainer, model = _trainer("network4")
    weight = next(model.discriminator_parameters())
    reached: list[int] = []
    weight.register_hook(lambda grad: reached.append(trainer.state.iteration))
    trainer.run()
    assert reached == [1, 2]  # once per iteration (one D step each), never from the G step
    assert all(p.requires_grad for p in model.discriminator_parameters())


def test_frozen_restores_tracking_after_an_error():
    layer = torch.nn.Linear(2, 2)
    layer.bias.requires_grad_(False)
    with pytest.raises(RuntimeError), frozen(layer.parameters()):
        assert not layer.weight.requires_grad
        raise RuntimeError("inside")
    assert layer.weight.requires_grad and not layer.bias.requires_grad  # only what it froze is thawed
