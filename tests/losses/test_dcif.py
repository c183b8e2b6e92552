from __future__ import annotations

import pytest
import torch
from torch import nn

from pipeline.losses import AdversarialLoss, ContentLoss, DiscriminatorLoss, GeneratorLoss


class MeanCritic(nn.Module):
    """A transparent discriminator: the score is the image mean times a learnable scale."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * x.mean(dim=(1, 2, 3))


@pytest.fixture()
def batch() -> tuple[torch.Tensor, ...]:
    torch.manual_seed(0)
    ct, pet = torch.rand(2, 1, 16, 16), torch.rand(2, 1, 16, 16) * 0.3
    f_ct = torch.rand(2, 1, 16, 16).requires_grad_()
    f_pet = torch.rand(2, 1, 16, 16).requires_grad_()
    return ct, pet, f_ct, f_pet


def test_generator_terms_follow_the_paper_roles(batch: tuple[torch.Tensor, ...]) -> None:
    ct, pet, f_ct, f_pet = batch
    d1, d2 = MeanCritic(), MeanCritic()
    terms = GeneratorLoss(alpha=10.0, mu=0.5)(ct, pet, f_ct, f_pet, d1, d2)
    adversarial, content = AdversarialLoss("generator"), ContentLoss(mu=0.5)
    torch.testing.assert_close(terms["adv1"], adversarial(d1(pet), d1(f_ct)))  # PET real for D1, F_CT fake
    torch.testing.assert_close(terms["adv2"], adversarial(d2(ct), d2(f_pet)))  # CT real for D2, F_PET fake
    torch.testing.assert_close(terms["content1"], content(f_ct, ct))  # G1 held to CT
    torch.testing.assert_close(terms["content2"], content(f_pet, pet))  # G2 held to PET
    expected = terms["adv1"] + terms["adv2"] + 10.0 * (terms["content1"] + terms["content2"])
    torch.testing.assert_close(terms["total"], expected)


def test_discriminator_terms_do_not_reach_the_generators(batch: tuple[torch.Tensor, ...]) -> None:
    ct, pet, f_ct, f_pet = batch
    d1, d2 = MeanCritic(), MeanCritic()
    terms = DiscriminatorLoss()(ct, pet, f_ct, f_pet, d1, d2)
    adversarial = AdversarialLoss("discriminator")
    torch.testing.assert_close(terms["d1"], adversarial(d1(pet), d1(f_ct)))
    torch.testing.assert_close(terms["d2"], adversarial(d2(ct), d2(f_pet)))
    terms["total"].backward()
    assert f_ct.grad is None and f_pet.grad is None
    assert d1.scale.grad is not None and d1.scale.grad.abs() > 0


def test_lsgan_mode_is_selectable(batch: tuple[torch.Tensor, ...]) -> None:
    ct, pet, f_ct, f_pet = batch
    d1, d2 = MeanCritic(), MeanCritic()
    terms = GeneratorLoss(mode="lsgan")(ct, pet, f_ct, f_pet, d1, d2)
    torch.testing.assert_close(terms["adv1"], AdversarialLoss("generator", "lsgan")(d1(pet), d1(f_ct)))
