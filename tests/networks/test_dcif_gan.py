from __future__ import annotations

import pytest
import torch

from pipeline.errors import DcifError
from pipeline.losses import DiscriminatorLoss, GeneratorLoss
from pipeline.networks import DCIFGAN, VARIANTS, DCIFGenerator
from pipeline.networks.dcif_gan import GlobalAveragePool
from pipeline.networks.blocks import ConcatFusion, ConvStage, CrossModalFusion, SwinStage

TINY = {"width": 8, "num_heads": 2, "window_size": 8, "depths": (2, 2, 2)}


def _pair(shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.rand(shape), torch.rand(shape)


def count_parameters(*modules: torch.nn.Module) -> int:
    """Distinct parameter values across ``modules``: a shared weight counts once."""
    unique = {id(p): p for module in modules for p in module.parameters()}
    return sum(p.numel() for p in unique.values())


def parameter_breakdown(module: torch.nn.Module) -> dict[str, int]:
    """Parameters per direct child (a child under two names, listed once) plus ``total``."""
    return {**{name: count_parameters(child) for name, child in module.named_children()},
            "total": count_parameters(module)}


@pytest.mark.parametrize("size", [(32, 32), (37, 53)])
def test_streams_and_fused_output_shapes_and_range(size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    generator = DCIFGenerator("network4", **TINY)
    ct, pet = _pair((2, 1, *size))
    f_ct, f_pet = generator.streams(ct, pet)
    fused = generator(torch.cat([ct, pet], dim=1))
    for image in (f_ct, f_pet, fused):
        assert image.shape == (2, 1, *size)
        assert image.min() >= 0 and image.max() <= 1
    torch.testing.assert_close(fused, 0.5 * (f_ct + f_pet))


def test_full_size_slice_forward() -> None:
    torch.manual_seed(0)
    generator = DCIFGenerator("network4", width=6, num_heads=1, depths=(2, 2, 2)).eval()
    with torch.no_grad():
        fused = generator(torch.rand(1, 2, 356, 356))
    assert fused.shape == (1, 1, 356, 356)
    assert torch.isfinite(fused).all()


def test_same_seed_gives_same_weights_and_output() -> None:
    x = torch.rand(1, 2, 24, 24)
    outputs, states = [], []
    for _ in range(2):
        torch.manual_seed(7)
        generator = DCIFGenerator("network4", **TINY)
        states.append(generator.state_dict())
        outputs.append(generator(x))
    assert all(torch.equal(states[0][key], states[1][key]) for key in states[0])
    assert torch.equal(outputs[0], outputs[1])


def test_an_empty_batch_gives_an_empty_fusion() -> None:
    gan = DCIFGAN("network4", width=16, num_heads=2, window_size=8, depths=(1, 1, 1))
    assert gan.generator(torch.rand(0, 3, 24, 40)).shape == (0, 2, 24, 40)
    f_ct, f_pet = gan.generator.streams(torch.rand(0, 1, 24, 40), torch.rand(0, 1, 24, 40))
    assert f_ct.shape == f_pet.shape == (0, 1, 24, 40)


def test_generator_rejects_a_single_channel_input() -> None:
    with pytest.raises(ValueError, match="CT windows then the PET"):
        DCIFGenerator("network2", **TINY)(torch.rand(1, 1, 16, 16))


@pytest.mark.parametrize("kwargs", [{"variant": "network5"}, {"width": 10, "num_heads": 4}])
def test_bad_configuration_is_one_line_project_error(kwargs: dict) -> None:
    with pytest.raises(DcifError) as error:
        DCIFGAN(**kwargs)
    assert "\n" not in str(error.value)


def test_coupled_parts_are_the_same_objects() -> None:
    model = DCIFGAN("network4", **TINY)
    generator = model.generator
    assert generator.extractor_ct is generator.extractor_pet
    assert generator.reconstructor_ct is not generator.reconstructor_pet
    assert model.d1.high_level is model.d2.high_level
    assert model.d1.low_level is not model.d2.low_level
    shared = DCIFGenerator("network4", share_reconstruction=True, **TINY)
    assert shared.reconstructor_ct is shared.reconstructor_pet
    uncoupled = DCIFGAN("network4", share_extraction=False, share_discriminators=False, **TINY)
    assert uncoupled.generator.extractor_ct is not uncoupled.generator.extractor_pet
    assert uncoupled.d1.high_level is not uncoupled.d2.high_level


@pytest.mark.parametrize("size", [(4, 4), (5, 7)])
def test_global_average_pool_is_the_adaptive_pool_with_a_channels_last_gradient(size: tuple[int, int]) -> None:
    x = torch.rand(3, 16, *size).to(memory_format=torch.channels_last).requires_grad_()
    pooled = GlobalAveragePool()(x)
    torch.testing.assert_close(pooled, torch.nn.functional.adaptive_avg_pool2d(x, 1))
    (gradient,) = torch.autograd.grad(pooled.sum(), x)
    assert gradient.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(gradient, torch.full_like(x, 1 / (size[0] * size[1])))


def test_discriminator_parameters_count_a_shared_part_once() -> None:
    shared, separate = (DCIFGAN("network4", share_discriminators=s, **TINY) for s in (True, False))
    d1_d2 = list(shared.d1.parameters()) + list(shared.d2.parameters())
    assert len(list(shared.discriminator_parameters())) == len({id(p) for p in d1_d2}) < len(d1_d2)
    assert len(list(separate.discriminator_parameters())) == len(list(separate.d1.parameters())) * 2


def _grads(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in module.parameters()]


def test_shared_modules_accumulate_gradient_from_both_streams() -> None:
    torch.manual_seed(0)
    model = DCIFGAN("network4", **TINY)
    ct, pet = _pair((2, 1, 16, 16))
    shared = (model.generator.extractor_ct, model.d1.high_level)

    def backward(loss_of: str) -> list[list[torch.Tensor]]:
        model.zero_grad()
        f_ct, f_pet = model.generator.streams(ct, pet)
        stream1 = f_ct.mean() + model.d1(f_ct).mean()
        stream2 = f_pet.mean() + model.d2(f_pet).mean()
        {"1": stream1, "2": stream2, "both": stream1 + stream2}[loss_of].backward()
        return [_grads(module) for module in shared]

    only1, only2, joint = backward("1"), backward("2"), backward("both")
    for g1, g2, g12 in zip(only1, only2, joint):
        assert sum(g.abs().sum() for g in g1) > 0 and sum(g.abs().sum() for g in g2) > 0
        for a, b, ab in zip(g1, g2, g12):
            torch.testing.assert_close(a + b, ab)


def test_parameter_counts_reflect_sharing() -> None:
    model = DCIFGAN("network4", **TINY)
    generator = model.generator
    breakdown = parameter_breakdown(generator)
    assert "extractor_pet" not in breakdown  # the same module as extractor_ct
    assert sum(v for k, v in breakdown.items() if k != "total") == breakdown["total"] == count_parameters(generator)
    unshared = DCIFGenerator("network4", share_extraction=False, **TINY)
    assert count_parameters(unshared) == breakdown["total"] + breakdown["extractor_ct"]
    low, high = count_parameters(model.d1.low_level), count_parameters(model.d1.high_level)
    assert count_parameters(model.d1, model.d2) == 2 * low + high
    assert count_parameters(model) == breakdown["total"] + 2 * low + high


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_variant_trains_through_one_interface(variant: str) -> None:
    torch.manual_seed(0)
    model = DCIFGAN(variant, **TINY)
    ct, pet = _pair((2, 1, 21, 19))
    f_ct, f_pet = model.generator.streams(ct, pet)
    assert f_ct.shape == f_pet.shape == (2, 1, 21, 19)
    g_terms = GeneratorLoss()(ct, pet, f_ct, f_pet, model.d1, model.d2)
    g_terms["total"].backward()
    assert all(p.grad is not None for p in model.generator.parameters())
    DiscriminatorLoss()(ct, pet, f_ct, f_pet, model.d1, model.d2)["total"].backward()
    assert all(p.grad is not None for p in model.d1.parameters())
    if variant == "network1":
        assert model.d1 is model.d2 and torch.equal(f_ct, f_pet)
    else:
        assert model.d1 is not model.d2


def test_ablation_ladder_adds_one_module_per_rung() -> None:
    network2, network3, network4 = (DCIFGenerator(variant, **TINY) for variant in ("network2", "network3", "network4"))
    assert isinstance(network2.extractor_ct.deep, ConvStage) and isinstance(network2.fusion, ConcatFusion)
    assert isinstance(network3.extractor_ct.deep, SwinStage) and isinstance(network3.reconstructor_ct.deep, SwinStage)
    assert isinstance(network3.fusion, ConcatFusion) and isinstance(network4.fusion, CrossModalFusion)
    network1 = DCIFGenerator("network1", **TINY)
    assert network1.fusion is None and network1.extractor_ct.shallow[0].conv.in_channels == 2


def _synthetic_pair(size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """A CT-like textured disc and a PET-like hot blob, both in [0, 1]."""
    y, x = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    ct = (0.5 + 0.25 * torch.sin(8 * x) * torch.cos(6 * y)) * (x**2 + y**2 < 0.8)
    pet = torch.exp(-((x - 0.2) ** 2 + (y + 0.1) ** 2) / 0.05)
    return ct[None, None], pet[None, None]


def test_full_objective_overfits_one_slice_pair() -> None:
    """Generator and discriminators updated alternately; in 40 steps the content terms must fall below a quarter
    (they reach a tenth here: half by step 23)."""
    torch.manual_seed(0)
    model = DCIFGAN("network4", **TINY)
    ct, pet = _synthetic_pair()
    generator_loss, discriminator_loss = GeneratorLoss(), DiscriminatorLoss()
    g_optimizer = torch.optim.Adam(model.generator.parameters(), lr=1e-3)
    d_optimizer = torch.optim.Adam([*model.d1.parameters(), *model.d2.low_level.parameters()], lr=1e-4)
    content = []
    for _ in range(40):
        f_ct, f_pet = model.generator.streams(ct, pet)
        g_optimizer.zero_grad()
        g_terms = generator_loss(ct, pet, f_ct, f_pet, model.d1, model.d2)
        g_terms["total"].backward()
        g_optimizer.step()
        d_optimizer.zero_grad()
        discriminator_loss(ct, pet, f_ct, f_pet, model.d1, model.d2)["total"].backward()
        d_optimizer.step()
        content.append((g_terms["content1"] + g_terms["content2"]).item())
    assert content[-1] < 0.25 * content[0]


def test_a_large_cpu_batch_is_fused_in_parts_with_the_same_numbers(monkeypatch) -> None:
    torch.manual_seed(0)
    generator = DCIFGAN("network4", width=8, num_heads=2, depths=(1, 1, 1)).generator.eval()
    x = torch.rand(5, 2, 16, 24)
    calls = []
    streams = generator.streams
    monkeypatch.setattr(generator, "streams", lambda ct, pet: calls.append(len(ct)) or streams(ct, pet))
    with torch.inference_mode():
        whole = generator(x)
        generator.cpu_pixels_per_forward = 2 * 16 * 24
        parts = generator(x)
    assert calls == [5, 2, 2, 1]
    assert (parts - whole).abs().max() < 1e-6


SHIPPED = {"width": 16, "num_heads": 2, "window_size": 8, "depths": (2, 2, 1)}


@pytest.mark.parametrize(("kwargs", "sizes"),
                         [(SHIPPED, [(64, 64), (72, 104), (256, 256)]), ({}, [(64, 64), (72, 104)])],
                         ids=["shipped", "defaults"])
def test_scripted_generator_equals_eager_at_any_slice_size(kwargs: dict, sizes: list[tuple[int, int]]) -> None:
    """``torch.jit.script`` (what the bundle's ``ckpt_export`` runs) keeps every slice size, not one traced size."""
    torch.manual_seed(0)
    generator = DCIFGenerator("network4", **kwargs).eval()
    for name, p in generator.named_parameters():  # bias tables start near zero: make B matter
        if name.endswith("relative_position_bias_table"):
            torch.nn.init.normal_(p, std=0.5)
    scripted = torch.jit.script(generator)
    for size in sizes:
        x = torch.rand(1, 2, *size)
        with torch.inference_mode():
            assert (scripted(x) - generator(x)).abs().max() < 1e-5, size


@pytest.mark.parametrize("training", [False, True], ids=["inference", "training"])
def test_generator_runs_under_bf16_autocast_within_its_precision(training: bool) -> None:
    """bf16 autocast, the GPU's mixed precision (``tools/device_check.sh``, the trainer's ``amp``), here on the CPU,
    where it sets the kernels aside for ATen's ops as a GPU does: the in-place inference path too (whose addmm_ refused
    bf16 tokens against float32 weights), masked windows included, within bf16's precision of float32."""
    torch.manual_seed(0)
    generator = DCIFGenerator("network4", **SHIPPED).train(training)
    x = torch.rand(2, 2, 72, 64)
    with torch.inference_mode():
        expected = generator(x)
    with torch.inference_mode(not training), torch.autocast("cpu", dtype=torch.bfloat16):
        fused = generator(x)
    assert fused.dtype == torch.bfloat16
    assert (fused.float() - expected).abs().max() < 2e-2
    if training:
        fused.float().mean().backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in generator.parameters())


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_variant_scripts_with_its_streams(variant: str) -> None:
    """The streams are compiled as forward calls them, so a TorchScript export serves ModelFuser's f_ct and f_pet."""
    torch.manual_seed(0)
    generator = DCIFGenerator(variant, **TINY).eval()
    scripted = torch.jit.script(generator)
    assert scripted.state_dict().keys() == generator.state_dict().keys()
    ct, pet = _pair((3, 1, 24, 40))
    with torch.inference_mode():
        for got, expected in zip(scripted.streams(ct, pet), generator.streams(ct, pet)):
            assert (got - expected).abs().max() < 1e-5


def test_convolutions_run_channels_last_with_the_same_numbers():
    """Channels-last weights put every convolution in that layout (the Swin stages' own); the output is unchanged."""
    torch.manual_seed(0)
    generator = DCIFGenerator(width=16, num_heads=2, depths=(1, 1, 1)).eval()
    weights = [p for p in generator.parameters() if p.ndim == 4]
    assert weights and all(p.is_contiguous(memory_format=torch.channels_last) for p in weights)
    channels_first = DCIFGenerator(width=16, num_heads=2, depths=(1, 1, 1)).eval()
    channels_first.load_state_dict(generator.state_dict())
    channels_first.to(memory_format=torch.contiguous_format)
    x = torch.rand(1, 2, 40, 48)
    with torch.inference_mode():
        assert (generator(x) - channels_first(x)).abs().max() < 1e-6


def test_discriminators_run_channels_last_with_the_same_scores():
    """The critics' weights are channels-last as the generator's; their scores and input gradients are unchanged."""
    torch.manual_seed(0)
    model = DCIFGAN("network4", **TINY)
    critics = (model.d1, model.d2)
    assert all(p.is_contiguous(memory_format=torch.channels_last) for d in critics for p in d.parameters() if p.ndim == 4)
    channels_first = DCIFGAN("network4", **TINY)
    channels_first.load_state_dict(model.state_dict())
    channels_first.to(memory_format=torch.contiguous_format)
    x, target = torch.rand(4, 1, 32, 32, requires_grad=True), torch.randn(4, 1)
    for fast, reference in zip(critics, (channels_first.d1, channels_first.d2)):
        # A least-squares loss, as the adversarial terms: a plain sum of scores has a gradient of rounding noise
        # through the batch norms.
        scores, expected = fast(x), reference(x)
        (grad,) = torch.autograd.grad(((scores - target) ** 2).sum(), x)
        (expected_grad,) = torch.autograd.grad(((expected - target) ** 2).sum(), x)
        assert (scores - expected).abs().max() < 1e-5
        assert (grad - expected_grad).abs().max() < 1e-5 * expected_grad.abs().max()


@pytest.mark.parametrize(("variant", "kwargs"), [("network4", {}), ("network4", {"share_extraction": False}),
                                                 ("network2", {}), ("network1", {})])
def test_several_ct_windows_fuse_as_each_one_with_the_pet(variant: str, kwargs: dict) -> None:
    torch.manual_seed(0)
    generator = DCIFGenerator(variant, **TINY, **kwargs).eval()
    x = torch.rand(2, 3, 24, 20)  # two CT windows, then the PET
    with torch.inference_mode():
        both = generator(x)
        each = torch.cat([generator(x[:, [window, 2]]) for window in range(2)], dim=1)
        f_ct, f_pet = generator.streams(x[:, :2], x[:, 2:])
        one_ct, one_pet = generator.streams(x[:, 1:2], x[:, 2:])
    assert both.shape == (2, 2, 24, 20) and torch.equal(both, each)
    assert torch.equal(f_ct[:, 1:], one_ct) and torch.equal(f_pet[:, 1:], one_pet)


def test_the_pets_features_are_extracted_once_for_every_window(monkeypatch) -> None:
    torch.manual_seed(0)
    generator = DCIFGenerator("network4", **TINY).eval()
    extract, batches = generator.extractor_ct.forward, []
    monkeypatch.setattr(generator.extractor_ct, "forward", lambda images: batches.append(len(images)) or extract(images))
    with torch.inference_mode():
        generator(torch.rand(2, 3, 16, 16))
    assert batches == [6]  # two slices' two windows and their PET, in one pass
