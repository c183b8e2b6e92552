from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from monai.losses import SSIMLoss

from pipeline.losses.content import ContentLoss, SeparableSSIMLoss, window_sum


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


def test_structural_term_keeps_float32_precision_under_bf16_autocast() -> None:
    """A flat patch with faint detail: bf16 SSIM cancels it into noise (0.2 instead of 0.003)."""
    source = torch.full((2, 1, 32, 32), 0.3)
    output = source.clone()
    output[..., ::7, ::5] -= 0.01
    reference = ContentLoss(mu=1.0)(output, source)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        mixed = ContentLoss(mu=1.0)(output, source)
    assert reference.item() < 0.02
    torch.testing.assert_close(mixed.float(), reference, atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("shape", [(4, 1, 32, 32), (2, 3, 23, 41)])
def test_separable_ssim_is_monai_ssim(shape):
    torch.manual_seed(1)
    output, source = torch.rand(shape, requires_grad=True), torch.rand(shape)
    expected = SSIMLoss(spatial_dims=2, data_range=1.0)(output, source)
    (expected_grad,) = torch.autograd.grad(expected, output)
    got = SeparableSSIMLoss(data_range=1.0)(output, source)
    (got_grad,) = torch.autograd.grad(got, output)
    assert abs(got.item() - expected.item()) < 1e-6
    assert (got_grad - expected_grad).abs().max() < 1e-8


@pytest.mark.parametrize("size", [(9, 12), (11, 11)])
def test_window_sum_is_the_valid_correlation_and_its_gradient(size: tuple[int, int]) -> None:
    torch.manual_seed(2)
    images = torch.rand(2, 3, *size, dtype=torch.float64, requires_grad=True)
    column_taps, row_taps = (0.25, -0.5, 1.0, 0.125), (2.0, 0.5, -1.0)
    got = window_sum(images, column_taps, row_taps)
    window = torch.outer(torch.tensor(column_taps, dtype=torch.float64), torch.tensor(row_taps, dtype=torch.float64))
    expected = F.conv2d(images.reshape(6, 1, *size), window.view(1, 1, 4, 3)).view(2, 3, size[0] - 3, size[1] - 2)
    torch.testing.assert_close(got, expected)
    assert torch.autograd.gradcheck(lambda x: window_sum(x, column_taps, row_taps), (images,))


def test_window_sum_serves_training_after_inference() -> None:
    """Its cached bands are normal tensors even when first built in inference mode."""
    images = torch.rand(1, 1, 13, 13)
    with torch.inference_mode():
        window_sum(images, (0.5, 0.5), (0.5, 0.5))
    images.requires_grad_()
    window_sum(images, (0.5, 0.5), (0.5, 0.5)).sum().backward()
    assert images.grad is not None
