"""What the evaluator does with each fused study: write its volumes, pair outputs for metrics.

The evaluator's ``pred`` has one channel per (window, method) and its ``image`` the CT windows
then the PET (see :class:`pipeline.fusion.FusionNetwork`); these helpers know that layout so the
bundle configs do not.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.data import MetaTensor

from pipeline.engines.slice_metrics import batch_field
from pipeline.fusion.streaming import fused_filename
from pipeline.fusion.volume import fused_channels
from pipeline.io.nifti import save_volume


def window_pairs(output: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(y_pred, y)`` for :class:`pipeline.metrics.FusionMetric` from a one-method evaluator output.

    ``pred`` (B, W, ...) and ``image`` (B, W + 1, ...) become (B * W, 1, ...) fused images and
    (B * W, 2, ...) [CT window, PET] sources, so every window is scored against its own CT.
    """
    pred, image = (_plain(output[key]) for key in ("pred", "image"))
    n_windows = image.shape[1] - 1
    if pred.shape[1] != n_windows:
        raise ValueError(f"window_pairs needs one fused channel per window: {n_windows} windows, {pred.shape[1]} channels")
    pet = image[:, -1:]
    sources = torch.cat([torch.cat([image[:, w : w + 1], pet], dim=1) for w in range(n_windows)], dim=0)
    fused = torch.cat([pred[:, w : w + 1] for w in range(n_windows)], dim=0)
    return fused, sources


def _plain(tensor: torch.Tensor) -> torch.Tensor:
    """Drop MetaTensor metadata: metric inputs are plain arrays."""
    return tensor.as_tensor() if isinstance(tensor, MetaTensor) else tensor


class FusedVolumeWriter:
    """Write every fused channel of each study as NIfTI on the CT's geometry.

    Files go to ``<output_dir>/<study_key>/fused_<method>_<window>.nii.gz`` (the key is a hash);
    each write is atomic. The paths are left on ``engine.state.fusion_written`` for the MLflow
    logger, and accumulate in :attr:`written`.
    """

    def __init__(self, output_dir: str | Path, windows: Sequence[str], methods: Sequence[str]) -> None:
        self.output_dir = Path(output_dir)
        self.names = fused_channels(windows, methods)
        self.written: list[Path] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        pred = engine.state.output["pred"][0]
        reference = engine.state.batch["ct"][0]
        folder = self.output_dir / str(batch_field(engine, "study_key"))
        paths = []
        for channel, (window, method) in enumerate(self.names):
            volume = MetaTensor(pred[channel : channel + 1].as_tensor().float(), affine=reference.affine)
            paths.append(save_volume(folder / fused_filename(window, method), volume))
        self.written.extend(paths)
        engine.state.fusion_written = paths
