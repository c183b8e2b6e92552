"""Convolution blocks of the DCIF-GAN generators and discriminators, on MONAI's ``Convolution``."""

from __future__ import annotations

import torch
from monai.networks.blocks import Convolution
from torch import nn

LEAKY_RELU = ("leakyrelu", {"negative_slope": 0.2, "inplace": True})
"""Slope 0.2, the usual GAN choice (DCGAN, pix2pix, SwinFusion); the paper does not give one. In place: the
convolution's (or norm's) output is read by nothing else, and at 512 x 512 a second map of 16 channels costs
1.4-1.8 % of a CPU forward."""


def conv_block(
    in_channels: int,
    out_channels: int,
    stride: int = 1,
    norm: str | None = None,
    act: tuple | str | None = LEAKY_RELU,
) -> Convolution:
    """Conv 3x3 (padding 1) -> optional norm -> activation: the paper's "conv block"."""
    return Convolution(
        spatial_dims=2,
        in_channels=in_channels,
        out_channels=out_channels,
        strides=stride,
        kernel_size=3,
        act=act,
        norm=norm,
    )


class ConvStage(nn.Sequential):
    """``depth`` residual conv blocks at constant width: the CNN-only stand-in for a ``SwinStage``.

    Network1 and Network2 of the ablation are "CNN only"; swapping each Swin stage for a conv
    stage of the same depth and a residual keeps the ladder's other choices identical.
    """

    def __init__(self, dim: int, depth: int) -> None:
        super().__init__(*(conv_block(dim, dim) for _ in range(depth)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        for block in self:  # not super().forward(x), which TorchScript cannot compile
            y = block(y)
        return x + y
