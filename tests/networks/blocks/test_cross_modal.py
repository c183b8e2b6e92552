from __future__ import annotations

import pytest
import torch

from pipeline.networks.blocks.cross_modal import ConcatFusion, CrossModalBlock, CrossModalFusion
from pipeline.networks.blocks.windows import _cached_windows

CPU = torch.device("cpu")


def _reference_attention(stream, other, x_query: torch.Tensor, x_context: torch.Tensor) -> torch.Tensor:
    """softmax(Q K^T / sqrt(d) + B) V with Q from ``stream``'s weights, K and V from ``other``'s, one window."""
    tokens, dim = x_query.shape
    heads = stream.attn.num_heads
    q, _, _ = stream.attn.qkv(stream.norm1(x_query)).split(dim, dim=-1)
    _, k, v = other.attn.qkv(other.norm1(x_context)).split(dim, dim=-1)
    q, k, v = (t.reshape(tokens, heads, dim // heads).transpose(0, 1) for t in (q, k, v))
    index = stream.attn.relative_position_index.reshape(-1)
    bias = stream.attn.relative_position_bias_table[index].reshape(tokens, tokens, heads).permute(2, 0, 1)
    weights = torch.softmax(q @ k.transpose(-2, -1) / (dim // heads) ** 0.5 + bias, dim=-1)
    return stream.attn.proj((weights @ v).transpose(0, 1).reshape(tokens, dim))


def test_block_swaps_keys_and_values_between_streams() -> None:
    torch.manual_seed(0)
    block = CrossModalBlock(12, num_heads=2, window_size=8, shifted=False, mlp_ratio=2.0)
    ct, pet = torch.randn(1, 8, 8, 12), torch.randn(1, 8, 8, 12)  # one window: window order is raster order
    order = _cached_windows(1, 8, 8, 8, CPU, None, False).regular
    out_ct, out_pet = (t.reshape(1, 8, 8, 12) for t in block(ct.reshape(64, 12), pet.reshape(64, 12), order))

    cases = ((out_ct, block.ct, block.pet, ct, pet), (out_pet, block.pet, block.ct, pet, ct))
    for out, own, other, x_own, x_other in cases:
        attention = _reference_attention(own, other, x_own.reshape(64, 12), x_other.reshape(64, 12))
        mid = x_own + attention.reshape(1, 8, 8, 12)
        expected = mid + own.mlp(own.norm2(mid))
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("whole", [False, True])
def test_shifted_block_masks_context_wrapped_from_the_opposite_border(whole: bool) -> None:
    """In either layout: plain and masked windows as chunks of their own, or one chunk whose masks are its last
    windows' (which ATen's attention, at this head size of 6, takes padded with zeros)."""
    torch.manual_seed(0)
    block = CrossModalBlock(12, num_heads=2, window_size=8, shifted=True, mlp_ratio=2.0)
    windows = _cached_windows(1, 16, 16, 8, CPU, None, whole)
    ct, pet = torch.randn(1, 12, 16, 16), torch.randn(1, 12, 16, 16)
    nudged = pet.clone()
    nudged[0, :, 0, 0] += torch.randn(12)

    def ct_out(context: torch.Tensor) -> torch.Tensor:
        out = block(windows.enter(ct, True), windows.enter(context, True), windows.shifted, windows.after(True, None))
        return windows.as_map(out[0], ct.shape)

    change = (ct_out(nudged) - ct_out(pet)).abs().sum(1)[0]
    assert change[3, 3] > 1e-4  # CT queries read PET inside the shifted window
    assert change[15, 15] < 1e-6  # but not across the wrapped border


@pytest.mark.parametrize("shape", [(2, 12, 16, 24), (1, 12, 13, 21)])
def test_fusion_keeps_shapes_and_mixes_streams(shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    fusion = CrossModalFusion(12, depth=2, num_heads=2, window_size=8)
    ct, pet = torch.randn(shape), torch.randn(shape)
    out_ct, out_pet = fusion(ct, pet)
    assert out_ct.shape == out_pet.shape == shape
    assert not torch.allclose(fusion(ct, pet + 1.0)[0], out_ct)  # the CT stream reads PET


def test_fusion_alternates_windows_and_learns_each_streams_bias() -> None:
    torch.manual_seed(0)
    fusion = CrossModalFusion(12, depth=4, num_heads=2, window_size=8)
    assert [block.shift_size for block in fusion.blocks] == [0, 4, 0, 4]
    out_ct, out_pet = fusion(torch.randn(1, 12, 16, 16), torch.randn(1, 12, 16, 16))
    (out_ct.square().mean() + out_pet.square().mean()).backward()
    for block in fusion.blocks:
        for stream in (block.ct, block.pet):
            grad = stream.attn.relative_position_bias_table.grad
            assert grad is not None and grad.abs().sum() > 0


def test_concat_fusion_gives_each_stream_both_inputs() -> None:
    torch.manual_seed(0)
    fusion = ConcatFusion(6)
    ct, pet = torch.randn(1, 6, 9, 11), torch.randn(1, 6, 9, 11)
    out_ct, out_pet = fusion(ct, pet)
    assert out_ct.shape == out_pet.shape == ct.shape
    assert not torch.allclose(fusion(ct, pet + 1.0)[0], out_ct)
    assert not torch.allclose(fusion(ct + 1.0, pet)[1], out_pet)


def test_fusion_treats_each_image_of_a_batch_alone() -> None:
    torch.manual_seed(0)
    fusion = CrossModalFusion(12, depth=2, num_heads=2, window_size=8)
    ct, pet = torch.randn(2, 12, 16, 24), torch.randn(2, 12, 16, 24)
    batched = fusion(ct, pet)
    for index in range(2):
        alone = fusion(ct[index : index + 1], pet[index : index + 1])
        for got, expected in zip(batched, alone):
            torch.testing.assert_close(got[index : index + 1], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size", [(24, 40), (13, 21)])
def test_scripted_fusion_equals_eager(size: tuple[int, int]) -> None:
    """Under TorchScript CMIFM runs MONAI's layout and SDPA; eager runs window orders and the CPU kernel."""
    torch.manual_seed(0)
    fusion = CrossModalFusion(16, depth=2, num_heads=2, window_size=8).eval()  # head size 8: the kernel's
    for name, p in fusion.named_parameters():
        if name.endswith("relative_position_bias_table"):
            torch.nn.init.normal_(p, std=0.5)
    ct, pet = torch.randn(2, 16, *size), torch.randn(2, 16, *size)
    with torch.inference_mode():
        for got, expected in zip(torch.jit.script(fusion)(ct, pet), fusion(ct, pet)):
            torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
