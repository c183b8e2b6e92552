"""DCIF-GAN objectives: each player's loss as a dict of named terms, so the engine logs every term.

Roles (paper): PET is "real" for D1 and G1's F_CT is "fake"; CT is "real" for D2 and G2's F_PET is
"fake". L_G = sum over both generators of adv_i + alpha * content_i, content_i holding G_i to its
own source (F_CT to CT, F_PET to PET), plus, optionally, ``detail_weight`` times a
:class:`~pipeline.losses.detail.DetailLoss` of the final image. L_D = d1 + d2. For Network1 (one
generator, ``d1 is d2``) the same formulas hold with F_CT = F_PET = F: the single discriminator
sees F against PET and against CT, and F is held to both sources.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from pipeline.losses.adversarial import AdversarialLoss, AdversarialMode
from pipeline.losses.content import ContentLoss, IntensityNorm
from pipeline.losses.detail import DetailLoss

# A discriminator: a module, or a DDP-wrapped one behind a callable (see pipeline.engines.players).
Critic = Callable[[torch.Tensor], torch.Tensor]


class GeneratorLoss(nn.Module):
    """Generator objective: ``total``, ``adv1``, ``adv2``, ``content1``, ``content2``.

    Args:
        alpha: weight of the content terms. 100 (FusionGAN's lambda, SwinFusion's largest weight)
            makes content lead early training while the adversarial term still shapes the result;
            to be tuned.
        mu: SSIM weight inside the content loss (see :class:`ContentLoss`).
        intensity: ``"l1"`` or ``"l2"`` intensity term.
        mode: ``"ralsgan"`` (paper) or ``"lsgan"``.
        detail_weight: weight (inside ``alpha``) of the :class:`DetailLoss` of the final image
            ``(F_CT + F_PET) / 2``, logged as ``detail``; 0 (default) is the paper's objective.
        detail: that :class:`DetailLoss` (default: ``DetailLoss()``), built by the caller so its
            settings are stated once, where it is wired.
    """

    def __init__(
        self,
        alpha: float = 100.0,
        mu: float = 1.0,
        intensity: IntensityNorm = "l1",
        mode: AdversarialMode = "ralsgan",
        detail_weight: float = 0.0,
        detail: DetailLoss | None = None,
    ) -> None:
        super().__init__()
        self.alpha = alpha
        self.adversarial = AdversarialLoss("generator", mode)
        self.content = ContentLoss(intensity, mu)
        self.detail_weight = detail_weight
        self.detail = detail if detail is not None else DetailLoss()

    def forward(
        self,
        ct: torch.Tensor,
        pet: torch.Tensor,
        f_ct: torch.Tensor,
        f_pet: torch.Tensor,
        d1: Critic,
        d2: Critic,
        window: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """``window``: each sample's CT window index, for a detail target that differs by window."""
        terms = {
            "adv1": self.adversarial(d1(pet), d1(f_ct)),
            "adv2": self.adversarial(d2(ct), d2(f_pet)),
            "content1": self.content(f_ct, ct),
            "content2": self.content(f_pet, pet),
        }
        content = terms["content1"] + terms["content2"]
        if self.detail_weight:
            terms["detail"] = self.detail(0.5 * (f_ct + f_pet), ct, pet, window)
            content = content + self.detail_weight * terms["detail"]
        total = terms["adv1"] + terms["adv2"] + self.alpha * content
        return {"total": total, **terms}


class DiscriminatorLoss(nn.Module):
    """Discriminator objective: ``total``, ``d1``, ``d2``; the fakes are detached from the generators."""

    def __init__(self, mode: AdversarialMode = "ralsgan") -> None:
        super().__init__()
        self.adversarial = AdversarialLoss("discriminator", mode)

    def forward(
        self,
        ct: torch.Tensor,
        pet: torch.Tensor,
        f_ct: torch.Tensor,
        f_pet: torch.Tensor,
        d1: Critic,
        d2: Critic,
    ) -> dict[str, torch.Tensor]:
        terms = {
            "d1": self.adversarial(d1(pet), d1(f_ct.detach())),
            "d2": self.adversarial(d2(ct), d2(f_pet.detach())),
        }
        return {"total": terms["d1"] + terms["d2"], **terms}
