"""Fusion metrics inside MONAI/ignite workflows: per-slice scores averaged over samples and batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from monai.data import decollate_batch

from pipeline.metrics import fusion_metrics
from pipeline.handlers import FusionMetric, FusionMetricHandler


def fused_and_sources(batch: int, *spatial: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A random fused batch (B, 1, ...) and its sources (B, 2, ...) = [CT, PET]."""
    generator = torch.Generator().manual_seed(seed)
    sources = torch.rand(batch, 2, *spatial, generator=generator)
    return sources.mean(dim=1, keepdim=True), sources


def slice_score(name: str, fused: torch.Tensor, sources: torch.Tensor) -> float:
    return fusion_metrics(fused, sources[0], sources[1], names=(name,))[name]


def test_metric_averages_per_slice_scores_over_batches():
    batches = [fused_and_sources(2, 16, 16, seed=seed) for seed in (1, 2)]
    metric = FusionMetric("SSIM")
    for fused, sources in batches:
        metric(fused, sources)
    expected = np.mean([slice_score("SSIM", f, s) for fused, sources in batches for f, s in zip(fused, sources)])
    assert metric.aggregate().item() == pytest.approx(expected)


def test_volume_sample_is_the_mean_of_its_axial_slices():
    fused, sources = fused_and_sources(1, 16, 16, 3)
    per_sample = FusionMetric("AG")(fused, sources)
    slices = [slice_score("AG", fused[0, ..., k], sources[0, ..., k]) for k in range(3)]
    assert per_sample.shape == (1, 1)
    assert per_sample.item() == pytest.approx(np.mean(slices))


def test_decollated_list_input_matches_batch_input():
    fused, sources = fused_and_sources(3, 16, 16)
    from_list = FusionMetric("QABF")(decollate_batch(fused), decollate_batch(sources))
    assert torch.allclose(from_list, FusionMetric("QABF")(fused, sources))


def test_slices_without_a_finite_score_are_skipped_in_the_reduction():
    fused, sources = fused_and_sources(2, 16, 16)
    sources[1] = 0.0  # no source edge in sample 1: Q^AB/F undefined there
    metric = FusionMetric("QABF")
    metric(fused, sources)
    assert metric.aggregate().item() == pytest.approx(slice_score("QABF", fused[0], sources[0]))


def test_handler_reads_pred_and_image_from_the_engine_output():
    batches = [fused_and_sources(2, 16, 16, seed=seed) for seed in (3, 4)]
    engine = Engine(lambda engine, batch: {"pred": batch[0], "image": batch[1]})
    FusionMetricHandler("MI").attach(engine, "MI")
    engine.run(batches, max_epochs=1)
    scores = [slice_score("MI", f, s) for fused, sources in batches for f, s in zip(fused, sources)]
    assert engine.state.metrics["MI"] == pytest.approx(np.mean(scores))
    assert engine.state.metric_details["MI"].shape == (4, 1)


@pytest.mark.parametrize(
    ("y_pred_shape", "y_shape"),
    [((1, 1, 16, 16), (1, 1, 16, 16)), ((1, 2, 16, 16), (1, 2, 16, 16)), ((1, 1, 16, 16), (1, 2, 16, 15))],
)
def test_metric_rejects_inputs_that_are_not_fused_and_ct_pet(y_pred_shape, y_shape):
    with pytest.raises(ValueError, match=r"y \(B, 2, ...\) = \[CT, PET\]"):
        FusionMetric("SD")(torch.zeros(y_pred_shape), torch.zeros(y_shape))


def test_unknown_metric_name_is_rejected():
    with pytest.raises(ValueError, match="unknown fusion metric 'VIF'"):
        FusionMetric("VIF")
