"""What made a fused image: product version and fuser version, for DICOM provenance and MLflow params.

A fused image depends on the code (the product version), the method, its weights (a model's
digest) and the settings; derived UIDs and tracking params are both built from these facts, so a
new model gives new UIDs and a new MLflow param value.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from pipeline import __version__
from pipeline.fusion.registry import Fuser

PRODUCT = "dcif-fusion"
SOFTWARE_VERSION = f"{PRODUCT} {__version__}"
BASELINE_VERSION = "no weights"  # a classical method: its output depends on the code version only
_DIGEST_CHARS = 16


def weights_digest(network: torch.nn.Module) -> str:
    """``sha256:<16 hex>`` of a network's weights (names and values): changes exactly when its outputs may."""
    digest = hashlib.sha256()
    for name, tensor in sorted(network.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return f"sha256:{digest.hexdigest()[:_DIGEST_CHARS]}"


def file_digest(path: str | Path) -> str:
    """``sha256:<16 hex>`` of a file (e.g. a checkpoint), read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()[:_DIGEST_CHARS]}"


def fuser_version(fuser: Fuser) -> str:
    """The weights' digest of a trained fuser (one holding a ``network``), else :data:`BASELINE_VERSION`."""
    network = getattr(fuser, "network", None)
    return weights_digest(network) if isinstance(network, torch.nn.Module) else BASELINE_VERSION


def fuser_versions(fusers: Mapping[str, Fuser]) -> dict[str, str]:
    """Each method's :func:`fuser_version`: what every record of a study's outputs says made them."""
    return {name: fuser_version(fuser) for name, fuser in fusers.items()}
