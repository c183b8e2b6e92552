"""Torch modules of the product: the DCIF-GAN generators and discriminators (no I/O, no training loop)."""

from pipeline.networks.dcif_gan import (
    DCIFGAN,
    VARIANTS,
    DCIFGenerator,
    Discriminator,
    build_dcif_gan,
    build_discriminators,
)
from pipeline.networks.parameters import count_parameters, parameter_breakdown

__all__ = [
    "DCIFGAN",
    "VARIANTS",
    "DCIFGenerator",
    "Discriminator",
    "build_dcif_gan",
    "build_discriminators",
    "count_parameters",
    "parameter_breakdown",
]
