"""The window-order, chunked layout gives MONAI's block numbers: inference within 1e-4, gradients too."""

from __future__ import annotations

import pytest
import torch

from pipeline.networks import DCIFGAN
from pipeline.networks.blocks import cpu_kernels
from pipeline.networks.blocks import windows as windows_module
from tests.networks.monai_reference import reference_generator


def _pair(generator: torch.nn.Module, seed: int = 0) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(seed)
    for name, p in generator.named_parameters():  # bias tables start near zero: make B matter
        if name.endswith("relative_position_bias_table"):
            torch.nn.init.normal_(p, std=0.5)
    return generator.eval(), reference_generator(generator).eval()


@pytest.mark.parametrize("kernels", [True, False])  # without: ATen's ops on the gathered rows, as on a GPU
@pytest.mark.parametrize("size", [(40, 48), (37, 53)])
def test_fast_generator_matches_monai_blocks_in_inference(size: tuple[int, int], kernels: bool, monkeypatch) -> None:
    """Inference keeps each stage's maps in raster order, the blocks reading and writing each chunk's window rows."""
    if not kernels:
        monkeypatch.setattr(cpu_kernels, "_kernels_take", lambda x: False)
    monkeypatch.setattr(windows_module, "CPU_CHUNK_TOKENS", 256)  # several chunks, incl. the masked ones
    windows_module._cached_windows.cache_clear()
    fast, reference = _pair(DCIFGAN("network4", width=16, num_heads=2, depths=(2, 2, 2)).generator)
    x = torch.rand(3, 2, *size)
    with torch.inference_mode():
        expected, got = reference(x), fast(x)
    assert (got - expected).abs().max() < 1e-4
    windows_module._cached_windows.cache_clear()


def test_fast_generator_matches_monai_blocks_in_training() -> None:
    fast, reference = _pair(DCIFGAN("network4", width=16, num_heads=2, depths=(2, 2, 2)).generator, seed=1)
    x = torch.rand(2, 2, 32, 32)
    losses = []
    for network in (fast, reference):
        network.train().zero_grad()
        f_ct, f_pet = network.streams(x[:, :1], x[:, 1:])
        loss = (f_ct - x[:, :1]).square().mean() + (f_pet - x[:, 1:]).abs().mean()
        loss.backward()
        losses.append(loss.detach())
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=1e-6)
    for (name, p), q in zip(fast.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-3, atol=1e-6, msg=name)


def test_shipped_checkpoint_loads_and_matches_monai_blocks() -> None:
    from pipeline.fusion.selection import MODEL_METHOD, build_fusers

    fast = build_fusers([MODEL_METHOD])[MODEL_METHOD].network
    reference = reference_generator(fast).eval()
    x = torch.rand(1, 2, 64, 72)
    with torch.inference_mode():
        assert (fast(x) - reference(x)).abs().max() < 1e-4
