"""DCIF-GAN PET/CT fusion: data path, networks, metrics, fusers and workflows built on MONAI."""

__version__ = "0.1.0"
