"""Fusion methods by name: the classical baselines and the DCIF-GAN model behind one registry.

Importing this package registers every method, so ``get_fuser(name)`` and ``available_fusers()``
always see the full list.
"""

from pipeline.fusion.laplacian import LaplacianPyramidFuser
from pipeline.fusion.model import ModelFuser
from pipeline.fusion.pixelwise import AverageFuser, MaxFuser
from pipeline.fusion.registry import Fuser, UnknownFuserError, available_fusers, get_fuser, register_fuser
from pipeline.fusion.saliency import SaliencyLaplacianFuser, pet_saliency
from pipeline.fusion.volume import FusionNetwork, fuse_volume
from pipeline.fusion.wavelet import WaveletFuser

__all__ = [
    "AverageFuser",
    "Fuser",
    "FusionNetwork",
    "LaplacianPyramidFuser",
    "MaxFuser",
    "ModelFuser",
    "SaliencyLaplacianFuser",
    "UnknownFuserError",
    "WaveletFuser",
    "available_fusers",
    "fuse_volume",
    "get_fuser",
    "pet_saliency",
    "register_fuser",
]
