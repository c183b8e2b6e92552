"""Torch modules of the product: the DCIF-GAN generators and discriminators (no I/O, no training loop)."""

from pipeline.networks.dcif_gan import (
    DCIFGAN,
    VARIANTS,
    DCIFGenerator,
    Discriminator,
    build_discriminators,
)

__all__ = [
    "DCIFGAN",
    "VARIANTS",
    "DCIFGenerator",
    "Discriminator",
    "build_discriminators",
]
