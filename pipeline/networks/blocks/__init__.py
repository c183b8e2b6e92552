"""Building blocks of the DCIF-GAN networks: Swin stages, cross-modal fusion, conv blocks."""

from pipeline.networks.blocks.conv import ConvStage, conv_block
from pipeline.networks.blocks.cross_modal import ConcatFusion, CrossModalBlock, CrossModalFusion
from pipeline.networks.blocks.swin import SwinBlock, SwinStage, pad_to_multiple

__all__ = [
    "ConcatFusion",
    "ConvStage",
    "CrossModalBlock",
    "CrossModalFusion",
    "SwinBlock",
    "SwinStage",
    "conv_block",
    "pad_to_multiple",
]
