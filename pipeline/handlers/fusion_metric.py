"""Fusion metrics for MONAI/ignite workflows, so evaluators and bundle configs score fusion.

A MONAI evaluator's output holds the fused ``pred`` (B, 1, H, W) and the network input
``image`` (B, 2, H, W) with channel 0 CT and channel 1 PET, all in [0, 1]. :class:`FusionMetric`
takes exactly that pair, the ``(y_pred, y)`` form every MONAI metric takes, and
:class:`FusionMetricHandler` wires it to the engine the way ``monai.handlers.MeanDice`` does::

    "val_handlers": {"QABF": {"_target_": "pipeline.handlers.FusionMetricHandler", "name": "QABF"}}

Volumes (B, 1, H, W, D) are scored slice by slice along the last axis (axial for MONAI's
channel-first RAS volumes); a sample's value is the mean of its slices' finite values, as in
:func:`pipeline.metrics.fusion.summarise`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from monai.handlers import IgniteMetricHandler, from_engine
from monai.data import MetaTensor
from monai.metrics import CumulativeIterationMetric
from monai.metrics.utils import do_metric_reduction
from monai.utils import CommonKeys, MetricReduction

from pipeline.metrics.fusion import METRIC_NAMES, score_slices, summarise


def window_pairs(output: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(y_pred, y)`` for :class:`pipeline.handlers.FusionMetric` from a one-method evaluator output.

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


def _volume(sample: torch.Tensor) -> np.ndarray:
    """One channel-first sample as ``(C, X, Y, Z)``: a 2-D sample is a volume of one slice."""
    volume = sample.detach().cpu().numpy()
    return volume[..., None] if volume.ndim == 3 else volume


class FusionMetric(CumulativeIterationMetric):
    """One named fusion metric (``AG, SF, SSIM, SD, MI, PSNR, IE`` or ``QABF``), accumulated over batches.

    ``metric(y_pred, y)`` takes the fused image (B, 1, spatial...) and the sources
    (B, 2, spatial...) = [CT, PET] and buffers one value per sample; ``aggregate()`` reduces
    them with MONAI's nan-aware ``reduction`` (default: mean over samples).
    """

    def __init__(self, name: str, reduction: MetricReduction | str = MetricReduction.MEAN) -> None:
        super().__init__()
        if name not in METRIC_NAMES:
            raise ValueError(f"unknown fusion metric {name!r}; available: {', '.join(METRIC_NAMES)}")
        self.name = name
        self.reduction = reduction

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        """Per-sample values (B, 1), each the mean over the sample's slices."""
        if y is None or y.shape[1] != 2 or y_pred.shape[1] != 1 or y_pred.shape[2:] != y.shape[2:]:
            got = None if y is None else tuple(y.shape)
            raise ValueError(
                f"FusionMetric needs y_pred (B, 1, ...) and y (B, 2, ...) = [CT, PET] of one spatial shape; "
                f"got {tuple(y_pred.shape)} and {got}"
            )
        values = []
        for fused, sources in zip(y_pred, y):
            fused, sources = _volume(fused), _volume(sources)
            scores = score_slices(fused, sources, [0], range(fused.shape[-1]), (self.name,))
            per_slice = [metrics for _, _, metrics in scores]
            values.append(summarise(per_slice)[self.name]["mean"])
        return torch.tensor(values, dtype=torch.float64).unsqueeze(1)

    def aggregate(self, reduction: MetricReduction | str | None = None) -> torch.Tensor:
        """Reduce the buffered per-sample values (``nan`` samples are skipped)."""
        values = self.get_buffer()
        if not isinstance(values, torch.Tensor):
            raise ValueError(f"FusionMetric {self.name} has no buffered values to aggregate")
        result, _ = do_metric_reduction(values, reduction or self.reduction)
        return result


class FusionMetricHandler(IgniteMetricHandler):
    """Ignite handler for :class:`FusionMetric`, reading ``pred`` and ``image`` from the engine output."""

    def __init__(
        self,
        name: str,
        reduction: MetricReduction | str = MetricReduction.MEAN,
        output_transform: Callable = from_engine([CommonKeys.PRED, CommonKeys.IMAGE]),
        save_details: bool = True,
    ) -> None:
        super().__init__(
            metric_fn=FusionMetric(name, reduction=reduction),
            output_transform=output_transform,
            save_details=save_details,
        )
