"""Score every fused slice of a study with the eight fusion metrics, as the evaluator runs.

The evaluator fuses a whole study volume per iteration (``image``: the CT windows then the PET,
``pred``: one channel per (window, method), laid out as its :class:`pipeline.fusion.FusionNetwork`
says, so no handler config repeats the windows and methods). This handler cuts both into axial slices, scores each
fused channel against its sources through :func:`pipeline.metrics.score_slices` (the one scoring
loop every report uses), and leaves the rows on the engine state for the report writer and the
MLflow slice logger.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.data import MetaTensor

from pipeline.metrics import score_slices
from pipeline.transforms.slicing import flagged_slices


def batch_field(engine: Engine, key: str) -> Any:
    """One item's datalist field from the evaluator's batch (batch size 1; collated as a list)."""
    value = engine.state.batch[key]
    if isinstance(value, (list, tuple)):
        value = value[0]
    return value.item() if isinstance(value, torch.Tensor) else value


def study_affine(engine: Engine) -> np.ndarray:
    """The study's voxel -> RAS mm affine, from the output ``image``, else the batch's: the voxel spacing, and
    where the patient's front and left are in a slice."""
    for image in (engine.state.output["image"], engine.state.batch.get("image")):
        if isinstance(image, MetaTensor):
            affine = image.affine
            # Collated MetaTensors carry one affine per batch item.
            return np.asarray((affine[0] if affine.ndim == 3 else affine).cpu(), dtype=np.float64)
    raise ValueError("the evaluator's 'image' must be a MetaTensor: its affine gives the voxel spacing and "
                     "the slices' orientation")


def evaluator_volumes(engine: Engine) -> tuple[np.ndarray, np.ndarray]:
    """The study's ``image`` (W + 1, ...) and ``pred`` (W * M, ...) as arrays.

    ``pred`` is laid out as :attr:`pipeline.fusion.FusionNetwork.channels` (``engine.network``) says.
    """
    windows, channels = engine.network.windows, engine.network.channels
    image = engine.state.output["image"][0].detach().float().cpu().numpy()
    pred = engine.state.output["pred"][0].detach().float().cpu().numpy()
    if pred.shape[0] != len(channels) or image.shape[0] != len(windows) + 1:
        raise ValueError(f"expected {len(windows)} windows x {len(channels) // len(windows)} methods = {len(channels)} "
                         f"fused channels and {len(windows) + 1} input channels, got {pred.shape[0]} and {image.shape[0]}")
    return image, pred


class FusionSliceMetrics:
    """Per-slice metric rows for each (window, method) output of each study.

    Args:
        every_k: score every k-th axial slice inside the body (1: all of them).
    """

    def __init__(self, every_k: int = 1) -> None:
        if every_k < 1:
            raise ValueError(f"every_k must be >= 1, got {every_k}")
        self.every_k = every_k

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def _reset(self, engine: Engine) -> None:
        engine.state.fusion_rows = []
        engine.state.fusion_slices = []

    def __call__(self, engine: Engine) -> None:
        image, pred = evaluator_volumes(engine)
        context = {key: batch_field(engine, key) for key in ("study_key", "study_index")}
        affine = study_affine(engine)
        # Slices outside the body carry nothing to score.
        scored = flagged_slices(engine.state.batch["body_slices"][0])[:: self.every_k]
        channels, ct_channels = engine.network.channels, engine.network.ct_channels
        slices: list[dict[str, Any]] = []
        for channel, z, metrics in score_slices(pred, image, ct_channels, scored):
            window, method = channels[channel]
            row = {**context, "window": window, "method": method, "slice_index": z, **metrics}
            slices.append({**row, "metrics": metrics, "ct": image[ct_channels[channel], ..., z], "pet": image[-1, ..., z],
                           "fused": pred[channel, ..., z], "affine": affine})
            engine.state.fusion_rows.append(row)
        engine.state.fusion_slices = slices
