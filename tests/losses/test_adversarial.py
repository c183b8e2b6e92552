from __future__ import annotations

import pytest
import torch

from pipeline.losses.adversarial import AdversarialLoss

# Scores chosen so every term is easy by hand: E[C(r)] = 2, E[C(f)] = 1.
REAL = torch.tensor([[1.0], [3.0]])
FAKE = torch.tensor([[0.0], [2.0]])


@pytest.mark.parametrize(
    ("role", "mode", "expected"),
    [
        # D(r,f) = [0, 2], D(f,r) = [-2, 0]: mean((D(r,f)-1)^2) + mean((D(f,r)+1)^2) = 1 + 1
        ("discriminator", "ralsgan", 2.0),
        # mean((D(f,r)-1)^2) + mean((D(r,f)+1)^2) = (9+1)/2 + (1+9)/2
        ("generator", "ralsgan", 10.0),
        # mean((C(r)-1)^2) + mean(C(f)^2) = (0+4)/2 + (0+4)/2
        ("discriminator", "lsgan", 4.0),
        # mean((C(f)-1)^2) = (1+1)/2
        ("generator", "lsgan", 1.0),
    ],
)
def test_hand_computed_values(role: str, mode: str, expected: float) -> None:
    assert AdversarialLoss(role, mode)(REAL, FAKE).item() == pytest.approx(expected)


def test_relativistic_loss_depends_only_on_score_differences() -> None:
    loss = AdversarialLoss("discriminator")
    assert loss(REAL + 5.0, FAKE + 5.0).item() == pytest.approx(loss(REAL, FAKE).item())


def test_perfect_discriminator_has_zero_loss_and_fooled_generator_pays() -> None:
    real, fake = torch.tensor([0.5, 0.5]), torch.tensor([-0.5, -0.5])  # D(r,f) = 1, D(f,r) = -1
    assert AdversarialLoss("discriminator")(real, fake).item() == 0.0
    assert AdversarialLoss("generator")(real, fake).item() == pytest.approx(8.0)


def test_generator_gradient_reaches_the_fake_scores() -> None:
    fake = FAKE.clone().requires_grad_()
    AdversarialLoss("generator")(REAL, fake).backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0


def test_unknown_mode_is_rejected() -> None:
    with pytest.raises(ValueError, match="wgan"):
        AdversarialLoss("discriminator", "wgan")
