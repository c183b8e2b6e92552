"""The detail loss on the final fused image, and its place in the generator objective."""

from __future__ import annotations

import pytest
import torch

from pipeline.fusion.saliency import SaliencyLaplacianFuser, pet_saliency
from pipeline.losses import DetailLoss, GeneratorLoss, SobelMagnitude
from pipeline.losses.content import SeparableSSIMLoss
from pipeline.networks import DCIFGAN


def test_sobel_magnitude_is_zero_on_flat_images_and_known_on_a_ramp():
    sobel = SobelMagnitude()
    assert torch.count_nonzero(sobel(torch.full((1, 1, 8, 8), 0.3))) == 0
    ramp = torch.arange(8.0).repeat(8, 1)[None, None] / 10  # +0.1 per column
    inner = sobel(ramp)[..., 1:-1, 1:-1]
    assert torch.allclose(inner, torch.full_like(inner, 0.8))  # Sobel weights 1+2+1 on a 0.2 central difference


def test_sobel_magnitude_is_the_3x3_sobel_convolution_forward_and_backward():
    kernel_x = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    kernels = torch.stack([kernel_x, kernel_x.T])[:, None]
    image = torch.rand(3, 1, 13, 17, requires_grad=True)
    padded = torch.nn.functional.pad(image, (1, 1, 1, 1), mode="replicate")
    expected = torch.nn.functional.conv2d(padded, kernels).abs().sum(1, keepdim=True)
    got = SobelMagnitude()(image)
    weights = torch.rand_like(got)
    assert got.shape == image.shape and torch.allclose(got, expected, atol=1e-6)
    assert torch.allclose(*(torch.autograd.grad((out * weights).sum(), image)[0] for out in (got, expected)), atol=1e-5)


def test_detail_loss_is_zero_for_the_common_image_and_grows_with_blur():
    image = torch.rand(2, 1, 16, 16)
    loss = DetailLoss()
    assert loss(image, image, image).item() == pytest.approx(0.0, abs=1e-7)
    blurred = torch.nn.functional.avg_pool2d(image, 3, stride=1, padding=1, count_include_pad=False)
    assert loss(blurred, image, image) > loss(0.5 * (image + blurred), image, image) > 0


def test_detail_loss_prefers_the_brighter_source_over_the_average():
    a, b = torch.zeros(1, 1, 8, 8), torch.ones(1, 1, 8, 8)
    loss = DetailLoss()
    assert loss(b, a, b).item() == pytest.approx(0.0, abs=1e-7)
    assert loss(0.5 * (a + b), a, b).item() == pytest.approx(0.5)


def test_edge_weight_scales_the_stronger_edge_term_alone():
    ct, pet = torch.rand(2, 1, 16, 16), torch.rand(2, 1, 16, 16)
    blurred = torch.nn.functional.avg_pool2d(0.5 * (ct + pet), 3, stride=1, padding=1, count_include_pad=False)
    plain, none, triple = (DetailLoss("max", 1.0, e)(blurred, ct, pet) for e in (1.0, 0.0, 3.0))
    sobel = SobelMagnitude()
    edges = torch.nn.functional.l1_loss(sobel(blurred), torch.maximum(sobel(ct), sobel(pet)))
    assert torch.allclose(plain - none, edges) and torch.allclose(triple - none, 3 * edges)


def test_source_ssim_adds_the_structure_lost_against_each_source():
    ct, pet = torch.rand(2, 1, 24, 24), torch.rand(2, 1, 24, 24)
    fused = 0.5 * (ct + pet)
    plain, weighted = (DetailLoss("saliency", 1.0, 2.0, "saliency", s)(fused, ct, pet) for s in (0.0, 0.5))
    structure = SeparableSSIMLoss()
    assert torch.allclose(weighted - plain, 0.5 * (structure(fused, ct) + structure(fused, pet)))
    # F equal to one source loses nothing against it: only the other source's term is left.
    own = DetailLoss("max", 0.0, 0.0, "max", 1.0)(ct, ct, pet) - DetailLoss("max", 0.0, 0.0)(ct, ct, pet)
    assert torch.allclose(own, structure(ct, pet))


def test_saliency_edges_follow_the_target_on_uptake_and_the_stronger_source_away_from_it():
    ct, pet = torch.rand(1, 1, 48, 48), torch.zeros(1, 1, 48, 48)
    pet[..., 4:10, 4:10] = 1.0  # uptake in one corner only
    loss = DetailLoss("saliency", 0.0, edges="saliency")
    sobel, target = SobelMagnitude(), loss.target(ct, pet)
    weight = pet_saliency(pet)
    assert weight.max() > 0.9 and weight.min() == 0  # near 1 on the uptake, 0 far from it
    # F = T: no intensity loss; the edge term is what is left of |grad T - max grad| away from uptake.
    away = ((1 - weight) * (sobel(target) - torch.maximum(sobel(ct), sobel(pet))).abs()).mean()
    assert torch.allclose(loss(target, ct, pet), away)
    assert DetailLoss("saliency", 0.0, edges="max")(target, ct, pet) > away
    with pytest.raises(ValueError, match="edges"):
        DetailLoss(edges="sharpest")


def test_target_args_set_the_target_and_where_its_edges_are_asked_for():
    ct, pet = torch.rand(1, 1, 48, 48), torch.zeros(1, 1, 48, 48)
    pet[..., 20:26, 20:26] = 0.2  # between the default thresholds: weaker saliency than with low 0.1, high 0.15
    args = {"low": 0.1, "high": 0.15, "radius": 4}
    loss = DetailLoss("saliency", 0.0, edges="saliency", target_args=args)
    target = SaliencyLaplacianFuser(**args)(ct, pet)
    assert torch.equal(loss.target(ct, pet), target)
    assert not torch.equal(target, SaliencyLaplacianFuser()(ct, pet))
    sobel, weight = SobelMagnitude(), pet_saliency(pet, **args)
    assert all(map(torch.equal, loss._target(ct, pet, None), (target, weight)))  # the saliency computed once for both
    away = ((1 - weight) * (sobel(target) - torch.maximum(sobel(ct), sobel(pet))).abs()).mean()
    assert torch.allclose(loss(target, ct, pet), away)  # the edges follow T where T itself takes the PET
    with pytest.raises(ValueError, match="has no setting 'radus'"):
        DetailLoss("saliency", target_args={"radus": 4})


def test_window_target_args_give_each_window_its_own_target():
    ct, pet = torch.rand(4, 1, 48, 48), torch.zeros(4, 1, 48, 48)
    pet[..., 20:26, 20:26] = 0.3  # above the lung setting's threshold, below the mediastinal one's
    lung, mediastinal = {"low": 0.1, "high": 0.22}, {"low": 0.2, "high": 0.45}
    loss = DetailLoss("saliency", 0.0, edges="saliency", target_args=lung,
                      window_target_args={"mediastinal": mediastinal}, windows=("lung", "mediastinal"))
    window = torch.tensor([0, 1, 1, 0])
    target, uptake = loss._target(ct, pet, window)
    for fuser, rows in ((SaliencyLaplacianFuser(**lung), [0, 3]), (SaliencyLaplacianFuser(**mediastinal), [1, 2])):
        assert torch.allclose(target[rows], fuser(ct[rows], pet[rows]))
        assert torch.allclose(uptake[rows], fuser.saliency(pet[rows]))
    assert uptake[0].max() > uptake[1].max()  # the lung target takes more of the PET
    # each sample is pulled towards its own window's target: zero intensity loss at F = T
    assert loss(target, ct, pet, window) < loss(target, ct, pet, 1 - window)
    with pytest.raises(ValueError, match="pass each sample's window index"):
        loss(target, ct, pet)
    with pytest.raises(ValueError, match="outside the trained windows"):
        DetailLoss("saliency", window_target_args={"bone": {}}, windows=("lung", "mediastinal"))
    overridden = DetailLoss("saliency", target_args=lung, window_target_args={"mediastinal": {"high": 0.45}})
    window_target = overridden.window_targets[1]  # the window's settings override the shared ones
    assert (window_target.low, window_target.high) == (0.1, 0.45) and overridden.target.high == 0.22


def test_generator_loss_adds_the_weighted_detail_term_only_when_asked():
    gan = DCIFGAN(variant="network1", width=8, num_heads=2, depths=(1, 1, 1))
    ct, pet = torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32)
    f_ct, f_pet = gan.generator.streams(ct, pet)
    paper = GeneratorLoss(alpha=10.0)(ct, pet, f_ct, f_pet, gan.d1, gan.d2)
    assert "detail" not in paper
    with_detail = GeneratorLoss(alpha=10.0, detail_weight=2.0)(ct, pet, f_ct, f_pet, gan.d1, gan.d2)
    expected = DetailLoss()(0.5 * (f_ct + f_pet), ct, pet)
    assert torch.allclose(with_detail["detail"], expected)
    assert torch.allclose(with_detail["total"], paper["total"] + 10.0 * 2.0 * expected)
    detail = DetailLoss("saliency", 1.0, edge_weight=3.0, source_ssim=0.5)
    sharper = GeneratorLoss(alpha=10.0, detail_weight=2.0, detail=detail)(ct, pet, f_ct, f_pet, gan.d1, gan.d2)
    assert torch.allclose(sharper["detail"], detail(0.5 * (f_ct + f_pet), ct, pet))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device: the loss must follow its inputs there")
def test_detail_loss_follows_its_inputs_to_the_gpu_under_bf16_autocast():
    image = torch.rand(2, 1, 16, 16, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        assert torch.isfinite(DetailLoss()(image, image, image))


def test_detail_loss_runs_under_bf16_autocast():
    image = torch.rand(2, 1, 16, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = DetailLoss()(image.to(torch.bfloat16), image, image)
    assert torch.isfinite(value)


def test_detail_loss_with_the_saliency_target_prefers_that_fusion_to_max_and_average():
    from pipeline.fusion import get_fuser

    generator = torch.Generator().manual_seed(0)
    ct = torch.rand(2, 1, 32, 32, generator=generator)
    pet = torch.zeros(2, 1, 32, 32)
    pet[..., 10:20, 10:20] = 0.8
    loss = DetailLoss(target="saliency", mu=1.0)
    target = get_fuser("saliency")(ct, pet)
    at_target = loss(target, ct, pet)
    assert at_target < loss(torch.maximum(ct, pet), ct, pet)
    assert at_target < loss(0.5 * (ct + pet), ct, pet)
