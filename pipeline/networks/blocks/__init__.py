"""Building blocks of the DCIF-GAN networks: Swin stages, cross-modal fusion, conv blocks."""

from pipeline.networks.blocks.conv import ConvStage, conv_block
from pipeline.networks.blocks.cross_modal import ConcatFusion, CrossModalBlock, CrossModalFusion
from pipeline.networks.blocks.swin import SwinStage, pad_to_multiple, shifted_window_mask

__all__ = [
    "ConcatFusion",
    "ConvStage",
    "CrossModalBlock",
    "CrossModalFusion",
    "SwinStage",
    "conv_block",
    "pad_to_multiple",
    "shifted_window_mask",
]
