"""The two players of the GAN as callables, plain or wrapped in DistributedDataParallel.

DDP only synchronises gradients of parameters used through its own ``forward``. The generator is
trained through ``streams`` and the coupled discriminators share modules, so each player gets a
small ``forward`` wrapper before DDP wraps it; the training step then calls the players the same
way with or without torchrun. (Several forward calls through one DDP module before a single
backward synchronise correctly: checked with the gloo backend in tests.)
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel


class Players(NamedTuple):
    """``streams(ct, pet) -> (f_ct, f_pet)``; ``d1(x)``, ``d2(x)`` -> scores."""

    streams: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
    d1: Callable[[torch.Tensor], torch.Tensor]
    d2: Callable[[torch.Tensor], torch.Tensor]


class _Streams(nn.Module):
    """The generator's two-stream output as ``forward``."""

    def __init__(self, generator: nn.Module) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, ct: torch.Tensor, pet: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.generator.streams(ct, pet)


class _Critics(nn.Module):
    """D1 and D2 (which share blocks, or are one module for Network1) behind one ``forward``."""

    def __init__(self, d1: nn.Module, d2: nn.Module) -> None:
        super().__init__()
        self.d1, self.d2 = d1, d2

    def forward(self, x: torch.Tensor, index: int) -> torch.Tensor:
        return (self.d1, self.d2)[index](x)


def make_players(model: nn.Module, distributed: bool = False, device: torch.device | None = None) -> Players:
    """The model's players; with ``distributed`` each is DDP-wrapped (one device per process)."""
    if not distributed:
        return Players(model.generator.streams, model.d1, model.d2)
    device_ids = [device] if device is not None and device.type == "cuda" else None
    streams = DistributedDataParallel(_Streams(model.generator), device_ids=device_ids)
    critics = DistributedDataParallel(_Critics(model.d1, model.d2), device_ids=device_ids)
    return Players(streams, partial(critics, index=0), partial(critics, index=1))
