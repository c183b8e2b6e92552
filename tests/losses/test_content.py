from __future__ import annotations

import pytest
import torch

from pipeline.losses.content import ContentLoss


@pytest.fixture()
def image() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.rand(2, 1, 32, 32) * 0.5


@pytest.mark.parametrize("intensity", ["l1", "l2"])
def test_identical_images_cost_nothing(image: torch.Tensor, intensity: str) -> None:
    assert ContentLoss(intensity)(image, image).item() == pytest.approx(0.0, abs=1e-6)


def test_l1_and_l2_intensity_terms(image: torch.Tensor) -> None:
    shifted = image + 0.5
    assert ContentLoss("l1", mu=0.0)(shifted, image).item() == pytest.approx(0.5)
    assert ContentLoss("l2", mu=0.0)(shifted, image).item() == pytest.approx(0.25)


def test_structural_term_is_weighted_by_mu(image: torch.Tensor) -> None:
    noisy = (image + 0.2 * torch.randn_like(image)).clamp(0, 1)
    intensity_only = ContentLoss(mu=0.0)(noisy, image)
    one_minus_ssim = ContentLoss(mu=1.0)(noisy, image) - intensity_only
    assert one_minus_ssim.item() > 0.05
    torch.testing.assert_close(ContentLoss(mu=3.0)(noisy, image), intensity_only + 3.0 * one_minus_ssim)


def test_unknown_intensity_term_is_rejected() -> None:
    with pytest.raises(ValueError, match="l3"):
        ContentLoss("l3")
