"""Build the fusers a run asked for by name: what ``--method`` and the bundle's ``methods`` mean.

Only the model needs weights and a device; baselines take none. The model is the bundle's
``network_def`` with its ``checkpoint`` (:mod:`pipeline.bundle_model`) unless a run names its own.
Asking for the model's streams adds its pre-fused images F_CT (G1) and F_PET (G2), sharing the one
loaded network.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from pipeline.bundle_model import bundled_checkpoint, bundled_network
from pipeline.errors import DcifError
from pipeline.fusion.model import ModelFuser
from pipeline.fusion.registry import Fuser, get_fuser

logger = logging.getLogger(__name__)

MODEL_METHOD = "dcif_gan"
# The best classical fuser on the model card's validation studies (lesion contrast and metrics won):
# Laplacian keeps the most of the tumour's contrast (its expert contour against a 10 mm ring) in both
# windows and beats average and DWT on most metrics.
BASELINE_FALLBACK = "laplacian"
# Whether the shipped model is the default: only while no fuser dominates it on the model card's
# evaluation (lesion contrast ratio on the tumour contours and metrics won, both windows) and it keeps
# at least half of every validation tumour's contrast in the lung window. The weights trained towards
# the stretched-PET target meet that; earlier ones showed most lung-window tumours dark, and then the
# default was the baseline.
MODEL_IS_DEFAULT = True


def default_method(checkpoint: str | Path | None = None) -> str:
    """The model when its checkpoint (default: the bundle's) is there and it is the best fuser evaluated, else
    the best baseline; a missing checkpoint is said in a warning, as the output's names alone would not say why."""
    if not MODEL_IS_DEFAULT:
        return BASELINE_FALLBACK
    weights = Path(checkpoint or bundled_checkpoint())
    if weights.is_file():
        return MODEL_METHOD
    logger.warning("no trained %s checkpoint at %s: fusing with the %s baseline", MODEL_METHOD, weights,
                   BASELINE_FALLBACK)
    return BASELINE_FALLBACK


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as torch's, refused in one line naming the option where this machine has no CUDA: torch says only
    ``Torch not compiled with CUDA enabled``, and only once a study reaches the device."""
    chosen = torch.device(device)
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise DcifError(f"--device {chosen}: no CUDA device is available on this machine")
    return chosen


def build_fusers(
    methods: Sequence[str],
    checkpoint: str | Path | None = None,
    network: nn.Module | None = None,
    device: str | torch.device | None = None,
    streams: bool = False,
) -> dict[str, Fuser]:
    """``{name: fuser}`` in the order given; ``streams`` adds ``dcif_gan_f_ct`` and ``dcif_gan_f_pet``.

    The model is ``network`` with the weights at ``checkpoint``; either one left out is the bundle's.
    """
    fusers: dict[str, Fuser] = {}
    for name in dict.fromkeys(methods):
        if name == MODEL_METHOD:
            fusers[name] = get_fuser(name, network=network if network is not None else bundled_network(),
                                     checkpoint=checkpoint or bundled_checkpoint(), device=device)
        else:
            fusers[name] = get_fuser(name)
    if streams:
        if MODEL_METHOD not in fusers:
            raise ValueError(f"streams (F_CT, F_PET) exist only for the {MODEL_METHOD} method")
        network = fusers[MODEL_METHOD].network
        for output in ("f_ct", "f_pet"):
            fusers[f"{MODEL_METHOD}_{output}"] = ModelFuser(network=network, device=device, output=output)
    return fusers
