"""Least-squares adversarial terms: relativistic-average (DCIF-GAN's form, default) or plain.

Both take the critic's raw scores C(real) and C(fake) of one discriminator and return a scalar.
Relativistic average ("ralsgan", Jolicoeur-Martineau 2018) scores each sample relative to the
other set's mean, D(r, f) = C(r) - E[C(f)], D(f, r) = C(f) - E[C(r)]:

- discriminator: E[(D(r, f) - 1)^2] + E[(D(f, r) + 1)^2]
- generator:     E[(D(f, r) - 1)^2] + E[(D(r, f) + 1)^2]

Plain least squares ("lsgan", Mao et al. 2017, labels 0/1) is kept selectable:

- discriminator: E[(C(r) - 1)^2] + E[C(f)^2]
- generator:     E[(C(f) - 1)^2]

The 1/2 factors of the LSGAN paper are dropped so that both forms sum two (or one) squared terms
on the same scale. E is the mean over the batch.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

AdversarialMode = Literal["ralsgan", "lsgan"]
Role = Literal["discriminator", "generator"]

# (target for the real scores, target for the fake scores); None: the term is absent.
_TARGETS: dict[tuple[str, str], tuple[float | None, float]] = {
    ("ralsgan", "discriminator"): (1.0, -1.0),
    ("ralsgan", "generator"): (-1.0, 1.0),
    ("lsgan", "discriminator"): (1.0, 0.0),
    ("lsgan", "generator"): (None, 1.0),
}


class AdversarialLoss(nn.Module):
    """The adversarial term of one player (``role``) in the chosen least-squares ``mode``."""

    def __init__(self, role: Role, mode: AdversarialMode = "ralsgan") -> None:
        super().__init__()
        if (mode, role) not in _TARGETS:
            raise ValueError(f"adversarial loss: unknown mode {mode!r} or role {role!r}")
        self.role = role
        self.mode = mode
        self.real_target, self.fake_target = _TARGETS[(mode, role)]

    def forward(self, real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
        if self.mode == "ralsgan":
            real_scores, fake_scores = real_scores - fake_scores.mean(), fake_scores - real_scores.mean()
        loss = F.mse_loss(fake_scores, torch.full_like(fake_scores, self.fake_target))
        if self.real_target is not None:
            loss = loss + F.mse_loss(real_scores, torch.full_like(real_scores, self.real_target))
        return loss
