"""Build the fusers a run asked for by name: what ``--method`` and the bundle's ``methods`` mean.

Only the model needs a checkpoint and a device; baselines take none. Asking for the model's
streams adds its pre-fused images F_CT (G1) and F_PET (G2), sharing the one loaded network.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from pipeline.fusion.model import ModelFuser
from pipeline.fusion.registry import Fuser, get_fuser

MODEL_METHOD = "dcif_gan"
# The best classical fuser on the model card's validation studies (lesion contrast and metrics won).
BASELINE_FALLBACK = "saliency"
# Whether the shipped model is the default: only while no classical fuser dominates it on the model
# card's evaluation (lesion contrast ratio and metrics won, both windows). The weights of 2026-12-03
# are dominated by their own training target, the saliency fuser, so the default is that fuser.
MODEL_IS_DEFAULT = False
# The bundle's shipped weights, where a source checkout (or the container) keeps them.
BUNDLED_CHECKPOINT = Path(__file__).resolve().parents[2] / "bundles" / "dcif_gan" / "models" / "model.pt"


def default_method(checkpoint: str | Path = BUNDLED_CHECKPOINT) -> str:
    """The model when its checkpoint is there and it is the best fuser evaluated, else the best baseline."""
    return MODEL_METHOD if MODEL_IS_DEFAULT and Path(checkpoint).is_file() else BASELINE_FALLBACK


def build_fusers(
    methods: Sequence[str],
    checkpoint: str | Path | None = None,
    device: str | torch.device | None = None,
    streams: bool = False,
) -> dict[str, Fuser]:
    """``{name: fuser}`` in the order given; ``streams`` adds ``dcif_gan_f_ct`` and ``dcif_gan_f_pet``."""
    fusers: dict[str, Fuser] = {}
    for name in dict.fromkeys(methods):
        fusers[name] = get_fuser(name, checkpoint=checkpoint, device=device) if name == MODEL_METHOD else get_fuser(name)
    if streams:
        if MODEL_METHOD not in fusers:
            raise ValueError(f"streams (F_CT, F_PET) exist only for the {MODEL_METHOD} method")
        network = fusers[MODEL_METHOD].network
        for output in ("f_ct", "f_pet"):
            fusers[f"{MODEL_METHOD}_{output}"] = ModelFuser(network=network, device=device, output=output)
    return fusers
