from __future__ import annotations

import torch

from pipeline.networks.blocks.conv import ConvStage, conv_block


def test_conv_block_stride_two_halves_the_map() -> None:
    block = conv_block(1, 32, stride=2, norm="batch")
    assert block(torch.rand(2, 1, 37, 53)).shape == (2, 32, 19, 27)


def test_conv_block_leaky_relu_keeps_a_negative_slope() -> None:
    block = conv_block(1, 1)
    torch.nn.init.ones_(block.conv.weight)
    torch.nn.init.zeros_(block.conv.bias)
    out = block(-torch.ones(1, 1, 5, 5))
    assert torch.isclose(out[0, 0, 2, 2], torch.tensor(-9.0 * 0.2))


def test_conv_stage_is_residual() -> None:
    stage = ConvStage(4, depth=3)
    for parameter in stage.parameters():
        torch.nn.init.zeros_(parameter)
    x = torch.randn(1, 4, 9, 11)
    assert torch.equal(stage(x), x)
