from __future__ import annotations

import pytest
import torch

from pipeline.networks.blocks import cpu_kernels, windows
from pipeline.networks.blocks.swin import SwinBlock, SwinStage, pad_to_multiple
from pipeline.networks.blocks.windows import _cached_windows, _window_order


@pytest.mark.parametrize("size", [(16, 16), (13, 21)])
def test_stage_keeps_bchw_shape(size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 12, *size)
    assert SwinStage(12, depth=2, num_heads=2, window_size=8)(x).shape == x.shape


def test_stage_alternates_regular_and_shifted_windows() -> None:
    stage = SwinStage(12, depth=4, num_heads=2, window_size=8)
    assert [block.shifted for block in stage.blocks] == [False, True, False, True]


def test_pad_to_multiple_reflects_and_is_a_no_op_on_multiples() -> None:
    x = torch.arange(37 * 53, dtype=torch.float32).reshape(1, 1, 37, 53)
    padded = pad_to_multiple(x, 8)
    assert padded.shape == (1, 1, 40, 56)
    assert torch.equal(padded[..., :37, :53], x)
    assert torch.equal(padded[..., 37, :53], x[..., 35, :])  # reflection about the last row
    assert pad_to_multiple(padded, 8) is padded


def test_pad_to_multiple_replicates_maps_too_small_to_reflect() -> None:
    x = torch.rand(1, 1, 3, 3)
    padded = pad_to_multiple(x, 8)
    assert padded.shape == (1, 1, 8, 8)
    assert torch.equal(padded[..., 7, :3], x[..., 2, :])


def test_only_windows_wrapped_by_the_shift_carry_a_mask() -> None:
    windows = _cached_windows(1, 16, 16, 8, torch.device("cpu"), None, False)
    assert all(chunk.mask is None for chunk in windows.regular.chunks)
    masks = [chunk.mask for chunk in windows.shifted.chunks if chunk.mask is not None]
    assert sum(mask.shape[0] for mask in masks) == 3  # of 4 windows, the top-left holds no wrapped pixels
    assert set(torch.cat(masks).unique().tolist()) == {-100.0, 0.0}
    assert torch.equal(windows.regular.order[windows.regular.inverse], torch.arange(256))


@pytest.mark.parametrize(("width", "whole"), [(12, False), (12, True), (16, True)])
def test_shifted_block_masks_pixels_wrapped_from_the_opposite_border(width: int, whole: bool) -> None:
    """With the masked windows a chunk of their own, or in one chunk with masks for its last windows alone: taken so
    by the CPU kernel (head size 8) and padded with zeros for ATen's attention (head size 6)."""
    torch.manual_seed(0)
    block = SwinStage(width, depth=2, num_heads=2, window_size=8).blocks[1]
    windows = _cached_windows(1, 16, 16, 8, torch.device("cpu"), None, whole)
    z = torch.randn(1, width, 16, 16)
    nudged = z.clone()
    nudged[0, :, 0, 0] += torch.randn(width)  # after the cyclic shift, (0, 0) shares a window with (15, 15) and (3, 3)

    def run(x: torch.Tensor) -> torch.Tensor:
        return windows.as_map(block(windows.enter(x, True), windows.shifted, windows.after(True, None)), x.shape)

    change = (run(nudged) - run(z)).abs().sum(1)[0]
    assert change[3, 3] > 1e-4  # same region: attends
    assert change[15, 15] < 1e-6  # wrapped from the far border: masked out


def test_relative_position_bias_is_learned() -> None:
    torch.manual_seed(0)
    stage = SwinStage(12, depth=2, num_heads=2, window_size=8)
    stage(torch.randn(1, 12, 16, 16)).square().mean().backward()
    for block in stage.blocks:
        table = block.attn.relative_position_bias_table
        assert table.shape == (15 * 15, 2)
        assert table.grad is not None and table.grad.abs().sum() > 0


@pytest.mark.parametrize("width", [12, 16])  # ATen's layers and attention; the CPU kernels
def test_block_overwrites_its_map_without_autograd_and_keeps_its_tokens_with_it(width: int) -> None:
    """Inference keeps a map in raster order and overwrites each chunk's windows' rows in place (no gather between
    blocks, tokens held once); training takes and gives tokens in the window order and must not overwrite them. Both
    give the same numbers."""
    torch.manual_seed(0)
    block = SwinBlock(width, num_heads=2, window_size=8, shifted=True, mlp_ratio=2.0)
    # 8 chunks, masked ones last
    order = _window_order(1, 32, 32, 8, True, torch.device("cpu"), chunk_tokens=128, whole=False)
    raster = torch.randn(32 * 32, width)
    tokens = raster[order.order]
    expected = block(tokens, order)
    with torch.no_grad():
        inference_input = raster.clone()
        inferred = block(inference_input, order)
    assert inferred.data_ptr() == inference_input.data_ptr()
    torch.testing.assert_close(inferred[order.order], expected)
    assert expected.requires_grad and expected.data_ptr() != tokens.data_ptr()
    assert not torch.equal(tokens, expected)  # the training input is left as it was


@pytest.mark.parametrize("size", [(24, 40), (13, 21)])
def test_scripted_stage_equals_eager(size: tuple[int, int]) -> None:
    """Under TorchScript the stage runs MONAI's layout and SDPA; eager runs window orders and the CPU kernel."""
    torch.manual_seed(0)
    stage = SwinStage(16, depth=2, num_heads=2, window_size=8).eval()  # head size 8: the kernel's
    for block in stage.blocks:
        torch.nn.init.normal_(block.attn.relative_position_bias_table, std=0.5)
    x = torch.randn(2, 16, *size)
    with torch.inference_mode():
        torch.testing.assert_close(torch.jit.script(stage)(x), stage(x), rtol=0, atol=1e-5)


def test_scripted_stage_leaves_its_input_alone() -> None:
    """One channels-last window: the scripted layout's tokens are a view of the input, never written into."""
    torch.manual_seed(0)
    x = torch.randn(1, 12, 8, 8).to(memory_format=torch.channels_last)
    kept = x.clone()
    with torch.inference_mode():
        torch.jit.script(SwinStage(12, depth=2, num_heads=2, window_size=8).eval())(x)
    assert torch.equal(x, kept)


def test_a_training_stage_gathers_once_as_its_blocks_write_the_next_order(monkeypatch) -> None:
    """Under autograd on the CPU each block's residual kernel writes its rows in the next block's window order, the
    last block's in the map's, so the one gather left is the one into the first order; inference (in place, chunk by
    chunk, on a copy of the map in raster order) gathers none, for the same numbers, and leaves its input alone."""
    if cpu_kernels.cpu_kernel() is None:
        pytest.skip("the CPU kernels could not be built here (no C++ compiler?)")
    gathers = []
    permute_rows = windows.permute_rows
    monkeypatch.setattr(windows, "permute_rows", lambda z, *order: gathers.append(z.shape) or permute_rows(z, *order))
    torch.manual_seed(0)
    stage = SwinStage(16, depth=4, num_heads=2, window_size=8)
    x = torch.randn(2, 16, 16, 24, requires_grad=True)
    trained = stage(x)
    assert len(gathers) == 1
    trained.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    gathers.clear()
    given = x.detach().clone()
    with torch.inference_mode():
        inferred = stage(given)
    assert len(gathers) == 0
    torch.testing.assert_close(inferred, trained.detach(), rtol=0, atol=1e-5)
    assert torch.equal(given, x.detach())
