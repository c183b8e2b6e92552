"""The model the bundle ships, as its ``inference.json`` defines it: one definition for every front door.

The bundle's workflows build ``network_def`` and load ``checkpoint`` into it. The CLI, the batch job,
the demo and the deploy app read the same two ids from the same file through MONAI's
``ConfigParser``, so an override of either in the bundle changes what every front door runs, and
none keeps a default of its own. The bundle is the folder ``$DCIF_GAN_BUNDLE`` names, else the one a
source checkout keeps (a container ships it as its model folder, see :mod:`pipeline.deploy.app`).
"""

from __future__ import annotations

import os
from pathlib import Path

from monai.bundle import ConfigParser
from torch import nn

from pipeline.errors import CheckpointError

BUNDLE_ENV = "DCIF_GAN_BUNDLE"
INFERENCE_CONFIG = Path("configs") / "inference.json"
CHECKOUT_BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "dcif_gan"


def is_bundle(folder: str | Path) -> bool:
    """Whether ``folder`` is a bundle: it holds ``configs/inference.json``."""
    return (Path(folder) / INFERENCE_CONFIG).is_file()


def default_bundle() -> Path:
    """Where the bundle is expected: ``$DCIF_GAN_BUNDLE``, else the checkout's ``bundles/dcif_gan``."""
    return Path(os.environ.get(BUNDLE_ENV) or CHECKOUT_BUNDLE)


def bundle_root(root: str | Path | None = None) -> Path:
    """``root``, else :func:`default_bundle`; it must be a bundle."""
    found = Path(root or default_bundle())
    if not is_bundle(found):
        raise CheckpointError(f"{found}: not a DCIF-GAN bundle (no {INFERENCE_CONFIG.as_posix()}); "
                              f"set {BUNDLE_ENV} to the bundle folder, or fuse with a baseline (--method laplacian)")
    return found


def _inference_config(root: str | Path | None) -> ConfigParser:
    """The bundle's inference config with ``bundle_root`` set to where the bundle is."""
    folder = bundle_root(root)
    parser = ConfigParser()
    parser.read_config(folder / INFERENCE_CONFIG)
    parser["bundle_root"] = str(folder)
    return parser


def bundled_checkpoint(root: str | Path | None = None) -> Path:
    """The bundle's ``checkpoint``: where its trained weights are (the file may be absent)."""
    return Path(_inference_config(root).get_parsed_content("checkpoint"))


def bundled_network(root: str | Path | None = None) -> nn.Module:
    """A fresh, untrained instance of the bundle's ``network_def``."""
    return _inference_config(root).get_parsed_content("network_def", instantiate=True)
