"""Fusion metrics for MONAI/ignite workflows, so evaluators and bundle configs score fusion.

A MONAI evaluator's output holds the fused ``pred`` (B, 1, H, W) and the network input
``image`` (B, 2, H, W) with channel 0 CT and channel 1 PET, all in [0, 1]. :class:`FusionMetric`
takes exactly that pair, the ``(y_pred, y)`` form every MONAI metric takes, and
:class:`FusionMetricHandler` wires it to the engine the way ``monai.handlers.MeanDice`` does::

    "val_handlers": {"QABF": {"_target_": "pipeline.handlers.FusionMetricHandler", "name": "QABF"}}

Volumes (B, 1, H, W, D) are scored slice by slice along the last axis (axial for MONAI's
channel-first RAS volumes); a sample's value is the mean of its slices' finite values, as in
:func:`pipeline.metrics.fusion.summarise`. ``lesion_ratio`` scores the whole volume instead: the
lesion contrast ratio of :mod:`pipeline.metrics.lesion` (the tumour mask where the sources carry it
as a third channel, the evaluator's ``label``, else the PET threshold; ring in mm from the sources'
affine), so validation can select a checkpoint on what the product is for, the lesion
kept, and not on the edge metrics alone: :func:`metric_mean` scores the mean of such epoch metrics
(the bundle's ``val_selection``, Q^AB/F and the lesion ratio) from their results, without scoring
the images again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from ignite.metrics import Metric, MetricsLambda
from monai.handlers import IgniteMetricHandler, from_engine
from monai.data import MetaTensor
from monai.data.utils import affine_to_spacing
from monai.metrics import CumulativeIterationMetric
from monai.metrics.utils import do_metric_reduction
from monai.utils import CommonKeys, MetricReduction

from pipeline.metrics.fusion import METRIC_NAMES, score_slices, summarise
from pipeline.metrics.lesion import lesion_contrast_ratio, lesion_mask_from_pet, ring_mask

LESION_RATIO = "lesion_ratio"


def window_pairs(output: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(y_pred, y)`` for :class:`pipeline.handlers.FusionMetric` from a one-method evaluator output.

    ``pred`` (B, W, ...) and ``image`` (B, W + 1, ...) become (B * W, 1, ...) fused images and
    (B * W, 2, ...) [CT window, PET] sources, so every window is scored against its own CT. The
    sources keep the image's affine (one per pair), which ``lesion_ratio`` measures its ring with.
    Where the output has a ``label`` (B, 1, ...), the tumour mask, it follows as a third source channel.
    """
    affine = output["image"].affine if isinstance(output["image"], MetaTensor) else None
    pred, image = (_plain(output[key]) for key in ("pred", "image"))
    n_windows = image.shape[1] - 1
    if pred.shape[1] != n_windows:
        raise ValueError(f"window_pairs needs one fused channel per window: {n_windows} windows, {pred.shape[1]} channels")
    shared = [image[:, -1:]] + ([_plain(output["label"]).to(image)] if output.get("label") is not None else [])
    sources = torch.cat([torch.cat([image[:, w : w + 1], *shared], dim=1) for w in range(n_windows)], dim=0)
    fused = torch.cat([pred[:, w : w + 1] for w in range(n_windows)], dim=0)
    if affine is not None:
        sources = MetaTensor(sources, affine=_per_sample(affine, pred.shape[0]).repeat(n_windows, 1, 1))
    return fused, sources


def _plain(tensor: torch.Tensor) -> torch.Tensor:
    """Drop MetaTensor metadata: metric inputs are plain arrays."""
    return tensor.as_tensor() if isinstance(tensor, MetaTensor) else tensor


def _per_sample(affine: torch.Tensor, samples: int) -> torch.Tensor:
    """``affine`` as one matrix per sample, (samples, S, S): a single matrix is shared by all."""
    side = affine.shape[-1]
    return affine.reshape(-1, side, side).expand(samples, side, side)


def _sample_spacings(y: torch.Tensor) -> list[np.ndarray]:
    """Voxel spacing (mm) of each sample of ``y`` as :func:`_volume` lays it out, from its affine (one (4, 4) for
    all, or (B, 4, 4)); 1 mm without one. A 2-D sample's added slice axis gets 1 mm (it holds one slice)."""
    dims = y.ndim - 2
    if not isinstance(y, MetaTensor):
        return [np.ones(3)] * y.shape[0]
    affines = _per_sample(y.affine, y.shape[0])
    return [np.append(affine_to_spacing(affine, r=dims), [1.0] * (3 - dims)) for affine in affines]


def _lesion_ratio(fused: np.ndarray, sources: np.ndarray, spacing: np.ndarray) -> float:
    """C(fused) / C(PET) of one ``(1, X, Y, Z)`` fused volume and its ``(2 or 3, X, Y, Z)`` sources."""
    pet = sources[1]
    lesion = sources[2] > 0.5 if len(sources) == 3 else lesion_mask_from_pet(pet)
    return lesion_contrast_ratio(fused[0], pet, lesion, ring_mask(lesion, spacing))["ratio"]


def _volume(sample: torch.Tensor) -> np.ndarray:
    """One channel-first sample as ``(C, X, Y, Z)``: a 2-D sample is a volume of one slice."""
    volume = sample.detach().cpu().numpy()
    return volume[..., None] if volume.ndim == 3 else volume


class FusionMetric(CumulativeIterationMetric):
    """A named fusion metric (``AG, SF, SSIM, SD, MI, PSNR, IE``, ``QABF`` or ``lesion_ratio``), accumulated over
    batches.

    ``metric(y_pred, y)`` takes the fused image (B, 1, spatial...) and the sources
    (B, 2, spatial...) = [CT, PET], or (B, 3, spatial...) with the tumour mask that ``lesion_ratio``
    then measures, and buffers one value per sample; ``aggregate()`` reduces
    them with MONAI's nan-aware ``reduction`` (default: mean over samples).
    """

    def __init__(self, name: str, reduction: MetricReduction | str = MetricReduction.MEAN) -> None:
        super().__init__()
        if name not in (*METRIC_NAMES, LESION_RATIO):
            raise ValueError(f"unknown fusion metric {name!r}; available: {', '.join((*METRIC_NAMES, LESION_RATIO))}")
        self.name = name
        self.reduction = reduction

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        """Per-sample values (B, 1), each the mean over the sample's slices."""
        if y is None or y.shape[1] not in (2, 3) or y_pred.shape[1] != 1 or y_pred.shape[2:] != y.shape[2:]:
            got = None if y is None else tuple(y.shape)
            raise ValueError(
                f"FusionMetric needs y_pred (B, 1, ...) and y (B, 2, ...) = [CT, PET] (or [CT, PET, lesion]) of one "
                f"spatial shape; got {tuple(y_pred.shape)} and {got}"
            )
        values = []
        for fused, sources, spacing in zip(y_pred, y, _sample_spacings(y)):
            fused, sources = _volume(fused), _volume(sources)
            if self.name == LESION_RATIO:
                values.append(_lesion_ratio(fused, sources, spacing))
            else:
                per_slice = [metrics for _, _, metrics in score_slices(fused, sources[:2], [0], range(fused.shape[-1]),
                                                                        [self.name])]
                values.append(summarise(per_slice)[self.name]["mean"])
        return torch.tensor(values, dtype=torch.float64).unsqueeze(1)

    def aggregate(self, reduction: MetricReduction | str | None = None) -> torch.Tensor:
        """Reduce the buffered per-sample values (``nan`` samples are skipped); ``nan`` where every sample is, which
        MONAI's reduction would give as 0 (a lesion ratio of 0 reads as a vanished lesion)."""
        values = self.get_buffer()
        if not isinstance(values, torch.Tensor):
            raise ValueError(f"FusionMetric {self.name} has no buffered values to aggregate")
        result, not_nans = do_metric_reduction(values, reduction or self.reduction)
        return torch.where(not_nans > 0, result, torch.nan)


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


def metric_mean(metrics: Sequence[Metric]) -> MetricsLambda:
    """The mean of other epoch metrics' results, e.g. a key metric over metrics also reported on their own.

    Ignite attaches a dependency's per-iteration update once, so each image is scored once per
    metric however many of these means and reports use it.
    """
    if not metrics:
        raise ValueError("metric_mean needs at least one metric")
    return MetricsLambda(_mean, *metrics)


def _mean(*values: float) -> float:
    return float(np.mean(values))
