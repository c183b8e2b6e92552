"""Training objectives of DCIF-GAN: adversarial and content terms and their composition."""

from pipeline.losses.adversarial import AdversarialLoss
from pipeline.losses.content import ContentLoss
from pipeline.losses.dcif import DiscriminatorLoss, GeneratorLoss
from pipeline.losses.detail import DetailLoss, SobelMagnitude

__all__ = ["AdversarialLoss", "ContentLoss", "DetailLoss", "DiscriminatorLoss", "GeneratorLoss", "SobelMagnitude"]
