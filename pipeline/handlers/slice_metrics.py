"""Score every fused slice of a study with the eight fusion metrics, as the evaluator runs.

The evaluator fuses a whole study volume per iteration (``image``: the CT windows then the PET,
``pred``: one channel per (window, method), laid out as :class:`pipeline.fusion.FusionNetwork` does). This handler cuts both into axial slices, scores each
fused channel against its sources through :func:`pipeline.metrics.fusion_metrics` (the one entry
point every report uses), and leaves the rows on the engine state for the report writer and the
MLflow slice logger.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events

from pipeline.fusion.volume import fused_channels
from pipeline.metrics import fusion_metrics
from pipeline.transforms.slicing import flagged_slices


def batch_field(engine: Engine, key: str) -> Any:
    """One item's datalist field from the evaluator's batch (batch size 1; collated as a list)."""
    value = engine.state.batch[key]
    if isinstance(value, (list, tuple)):
        value = value[0]
    return value.item() if isinstance(value, torch.Tensor) else value


def evaluator_volumes(engine: Engine, windows: Sequence[str], methods: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The study's ``image`` (W + 1, ...) and ``pred`` (W * M, ...) as arrays, checked against the layout."""
    image = engine.state.output["image"][0].detach().float().cpu().numpy()
    pred = engine.state.output["pred"][0].detach().float().cpu().numpy()
    expected = len(windows) * len(methods)
    if pred.shape[0] != expected or image.shape[0] != len(windows) + 1:
        raise ValueError(f"expected {len(windows)} windows x {len(methods)} methods = {expected} fused channels and "
                         f"{len(windows) + 1} input channels, got {pred.shape[0]} and {image.shape[0]}")
    return image, pred


class FusionSliceMetrics:
    """Per-slice metric rows for each (window, method) output of each study.

    Args:
        windows: the CT windows of the ``image`` channels, in order.
        methods: the fusers (or model outputs) per window, in :class:`FusionNetwork` order.
        every_k: score every k-th axial slice inside the body (1: all of them).
    """

    def __init__(self, windows: Sequence[str], methods: Sequence[str], every_k: int = 1) -> None:
        if every_k < 1:
            raise ValueError(f"every_k must be >= 1, got {every_k}")
        self.windows = list(windows)
        self.methods = list(methods)
        self.channel = {name: index for index, name in enumerate(fused_channels(windows, methods))}
        self.every_k = every_k

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def _reset(self, engine: Engine) -> None:
        engine.state.fusion_rows = []
        engine.state.fusion_slices = []

    def __call__(self, engine: Engine) -> None:
        image, pred = evaluator_volumes(engine, self.windows, self.methods)
        context = {key: batch_field(engine, key) for key in ("study_key", "study_index")}
        pet = image[-1]
        # Slices outside the body carry nothing to score.
        scored = flagged_slices(engine.state.batch["body_slices"][0])[:: self.every_k]
        slices: list[dict[str, Any]] = []
        for w, window in enumerate(self.windows):
            ct = image[w]
            for z in scored:
                for method in self.methods:
                    fused = pred[self.channel[(window, method)], ..., z]
                    metrics = fusion_metrics(fused, ct[..., z], pet[..., z])
                    row = {**context, "window": window, "method": method, "slice_index": z, **metrics}
                    slices.append({**row, "metrics": metrics, "ct": ct[..., z], "pet": pet[..., z], "fused": fused})
                    engine.state.fusion_rows.append(row)
        engine.state.fusion_slices = slices
