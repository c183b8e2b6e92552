"""The DCIF-GAN training engine.

MONAI's ``GanTrainer`` is unconditional and ``AdversarialTrainer`` judges the output against the
network's own input, so neither fits a two-source fusion GAN whose discriminators compare each
generator's output with the *other* modality. This engine keeps MONAI's ``Trainer`` machinery
(handlers, metrics, ``--tracking mlflow``) and only replaces one iteration: update D1/D2, then
G1/G2 from one generator forward, and report a ``loss`` key (the generator total) as MONAI's MLflow settings expect.
It fires MONAI's :class:`~monai.utils.enums.AdversarialIterationEvents` at the same points of the
iteration as ``AdversarialTrainer`` does, so handlers written for that trainer attach here too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import ignite.distributed as idist
import torch
from ignite.metrics import Metric
from monai.engines import IterationEvents, Trainer
from monai.inferers import Inferer, SimpleInferer
from monai.utils.enums import AdversarialIterationEvents
from torch import nn
from torch.optim import Optimizer
from torch.utils.data import DataLoader

from pipeline.engines.players import make_players

LossTerms = dict[str, torch.Tensor]


@contextmanager
def frozen(parameters: Iterable[nn.Parameter]) -> Iterator[None]:
    """Parameters that autograd does not track inside the block (a graph built there has no edges to them)."""
    tracked = [parameter for parameter in parameters if parameter.requires_grad]
    for parameter in tracked:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter in tracked:
            parameter.requires_grad_(True)


def prepare_fusion_batch(
    batchdata: dict[str, torch.Tensor], device: torch.device | str, non_blocking: bool = False, **kwargs: Any
) -> tuple[torch.Tensor, torch.Tensor]:
    """Move the CT and PET slices of a batch to ``device``: both ``(B, 1, H, W)`` in [0, 1]."""
    return tuple(  # type: ignore[return-value]
        torch.as_tensor(batchdata[key]).to(device=device, non_blocking=non_blocking, **kwargs) for key in ("ct", "pet")
    )


class FusionGANTrainer(Trainer):
    """Alternating D1/D2 then G1/G2 updates of a coupled fusion GAN.

    Args:
        model: holds ``generator`` (with ``streams(ct, pet) -> (f_ct, f_pet)``), ``d1`` and ``d2``;
            every ablation variant has this interface, so one engine trains them all.
        g_loss_function / d_loss_function: ``(ct, pet, f_ct, f_pet, d1, d2) -> dict`` of loss terms
            with a ``total`` key; every term is returned in the engine output for logging. The
            generator's also gets ``window``, the batch's CT window indices (``None`` where the
            batch has none), for a target that differs by window.
        d_steps: discriminator updates per generator update.
        d_loss_floor: skip the discriminator's update while its loss on the current batch is below
            this (DDcGAN's balance: a discriminator that already separates real from fused waits
            until the generators catch up, instead of saturating their adversarial terms); ``None``
            always updates. The engine output's ``d_updated`` says, per iteration, whether it did.
        inferer: runs the generator's ``streams`` as ``inferer(ct, streams, pet)``; the default
            :class:`~monai.inferers.SimpleInferer` calls it directly.
        amp: mixed precision on CUDA (``Trainer``'s switch); ignored on CPU.
        amp_kwargs: ``torch.autocast`` arguments; the default dtype is bfloat16, which needs no
            gradient scaler. With float16 (``{"dtype": torch.float16}``) both players' steps go
            through ``Trainer``'s gradient scaler.
        distributed: wrap both players in DistributedDataParallel (under torchrun).
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: DataLoader,
        model: torch.nn.Module,
        g_optimizer: Optimizer,
        d_optimizer: Optimizer,
        g_loss_function: Callable[..., LossTerms],
        d_loss_function: Callable[..., LossTerms],
        d_steps: int = 1,
        d_loss_floor: float | None = None,
        inferer: Inferer | None = None,
        epoch_length: int | None = None,
        amp: bool = False,
        amp_kwargs: dict | None = None,
        distributed: bool = False,
        key_train_metric: dict[str, Metric] | None = None,
        additional_metrics: dict[str, Metric] | None = None,
        train_handlers: Sequence | None = None,
        non_blocking: bool = False,
    ) -> None:
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            data_loader=train_data_loader,
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            prepare_batch=prepare_fusion_batch,
            key_metric=key_train_metric,
            additional_metrics=additional_metrics,
            handlers=train_handlers,
            amp=amp and torch.device(device).type == "cuda",
            amp_kwargs={"dtype": torch.bfloat16, **(amp_kwargs or {})},
            event_names=[AdversarialIterationEvents],
            decollate=True,
        )
        self.model = model
        self.g_optimizer = g_optimizer
        self.d_optimizer = d_optimizer
        self.g_loss_function = g_loss_function
        self.d_loss_function = d_loss_function
        self.d_steps = d_steps
        self.d_loss_floor = d_loss_floor
        self.inferer = SimpleInferer() if inferer is None else inferer
        self.players = make_players(model, distributed, torch.device(device))

    def _autocast(self) -> torch.autocast:
        return torch.autocast(device_type=self.state.device.type, enabled=self.amp, **self.amp_kwargs)

    def _update(self, loss: torch.Tensor, optimizer: Optimizer, player: str) -> None:
        """Backward and step one player, scaled when autocast runs in float16; fires its events."""
        scaler = self.scaler if self.scaler is not None and self.amp_kwargs["dtype"] == torch.float16 else None
        optimizer.zero_grad(set_to_none=True)
        (loss if scaler is None else scaler.scale(loss)).backward()
        self.fire_event(AdversarialIterationEvents[f"{player}_BACKWARD_COMPLETED"])
        if scaler is None:
            optimizer.step()
        else:
            scaler.step(optimizer)
            scaler.update()
        self.fire_event(AdversarialIterationEvents[f"{player}_MODEL_COMPLETED"])

    def _iteration(self, engine: FusionGANTrainer, batchdata: dict[str, torch.Tensor]) -> dict[str, Any]:
        ct, pet = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking)
        streams, d1, d2 = engine.players
        engine.model.train()
        # Filled as the iteration goes, so a handler of an intermediate event reads what is done so far.
        output: dict[str, Any] = {"ct": ct, "pet": pet, "d_updated": 0.0}
        engine.state.output = output

        # One generator forward serves both players: D steps see it detached, the G step through it.
        with engine._autocast():
            f_ct, f_pet = engine.inferer(ct, streams, pet)
        output["pred"] = (0.5 * (f_ct + f_pet)).detach().float()
        engine.fire_event(AdversarialIterationEvents.GENERATOR_FORWARD_COMPLETED)
        fake_ct, fake_pet = f_ct.detach().float(), f_pet.detach().float()
        for _ in range(engine.d_steps):
            with engine._autocast():
                d_terms = engine.d_loss_function(ct, pet, fake_ct, fake_pet, d1, d2)
            output["d_loss"] = d_terms["total"].item()
            engine.fire_event(AdversarialIterationEvents.DISCRIMINATOR_LOSS_COMPLETED)
            # Under DDP every rank must take the same branch (the update's backward is a collective): the ranks' mean.
            if engine.d_loss_floor is not None and _mean_over_ranks(output["d_loss"]) < engine.d_loss_floor:
                break
            engine._update(d_terms["total"], engine.d_optimizer, "DISCRIMINATOR")
            output["d_updated"] = 1.0

        # The G step needs the critics' scores and their gradients with respect to the fused images only. With the
        # critics' weights frozen while the loss is built, autograd skips their weight gradients and the real images'
        # branches altogether, and the unwrapped critics skip DDP, which has no gradient to synchronise here.
        with engine._autocast(), frozen(engine.model.discriminator_parameters()):
            g_terms = engine.g_loss_function(ct, pet, f_ct.float(), f_pet.float(), engine.model.d1, engine.model.d2,
                                             window=batchdata.get("window"))
        output["loss"] = g_terms["total"].item()
        engine.fire_event(AdversarialIterationEvents.GENERATOR_LOSS_COMPLETED)
        engine._update(g_terms["total"], engine.g_optimizer, "GENERATOR")

        output.update({f"g_{name}": value.item() for name, value in g_terms.items() if name != "total"})
        output.update({f"d_{name}": value.item() for name, value in d_terms.items() if name != "total"})
        # Like MONAI's trainers: MODEL_COMPLETED decollates the output into per-sample dicts with the
        # scalars replicated, the form MONAI's handlers (and --tracking) read.
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output


def _mean_over_ranks(value: float) -> float:
    """The mean of ``value`` over the DDP processes; the value itself in a single process."""
    return idist.all_reduce(value) / idist.get_world_size()
