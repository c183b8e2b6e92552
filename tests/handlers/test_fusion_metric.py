"""Fusion metrics inside MONAI/ignite workflows: per-slice scores averaged over samples and batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from monai.data import MetaTensor, decollate_batch

from pipeline.metrics import fusion_metrics
from pipeline.handlers import FusionMetric, FusionMetricHandler, metric_mean, window_pairs


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
    undefined = FusionMetric("QABF")
    undefined(fused[1:], sources[1:])
    assert undefined.aggregate().isnan().all()  # no sample scored: undefined, not 0 (MONAI's empty mean)


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
    with pytest.raises(ValueError, match=r"y \(B, 2, ...\) = \[CT, PET\] \(or \[CT, PET, lesion\]\)"):
        FusionMetric("SD")(torch.zeros(y_pred_shape), torch.zeros(y_shape))


def test_unknown_metric_name_is_rejected():
    with pytest.raises(ValueError, match="unknown fusion metric 'VIF'"):
        FusionMetric("VIF")


def lesion_volume(spacing: float) -> tuple[torch.Tensor, MetaTensor]:
    """A (1, 2, 24, 24, 8) CT/PET pair with a hot PET cube, its affine at ``spacing`` mm, and a fused
    image: half the PET on a CT ramp, so the ring's mean depends on how far the ring reaches."""
    sources = torch.full((1, 2, 24, 24, 8), 0.2)
    sources[0, 0] = torch.linspace(0, 0.4, 24)[:, None, None] ** 2
    sources[0, 1, 10:14, 10:14, 3:5] = 0.8
    affine = torch.diag(torch.tensor([spacing, spacing, spacing, 1.0]))
    return sources[:, 1:] * 0.5 + sources[:, :1], MetaTensor(sources, affine=affine)


def test_lesion_ratio_is_the_contrast_ratio_with_a_ring_in_millimetres():
    from pipeline.metrics.lesion import lesion_contrast_ratio, lesion_mask_from_pet, ring_mask

    fused, sources = lesion_volume(spacing=4.0)
    pet = sources[0, 1].numpy()
    lesion = lesion_mask_from_pet(pet)
    expected = lesion_contrast_ratio(fused[0, 0].numpy(), pet, lesion, ring_mask(lesion, (4.0,) * 3))["ratio"]
    assert FusionMetric("lesion_ratio")(fused, sources).item() == pytest.approx(expected)
    assert 0.1 < expected < 0.9
    # A 1 mm grid puts the 10 mm ring farther out in voxels: a different ring, a different ratio.
    fused_1mm, sources_1mm = lesion_volume(spacing=1.0)
    assert FusionMetric("lesion_ratio")(fused_1mm, sources_1mm).item() != pytest.approx(expected)


def test_lesion_ratio_measures_the_tumour_mask_when_the_sources_carry_one():
    from pipeline.metrics.lesion import lesion_contrast_ratio, ring_mask

    fused, sources = lesion_volume(spacing=4.0)
    mask = torch.zeros(1, 1, 24, 24, 8)
    mask[0, 0, 8:16, 8:16, 2:6] = 1  # the whole tumour, wider than the hot cube
    with_mask = MetaTensor(torch.cat([sources.as_tensor(), mask], dim=1), affine=sources.affine)
    lesion = mask[0, 0].numpy() > 0.5
    expected = lesion_contrast_ratio(fused[0, 0].numpy(), sources[0, 1].numpy(), lesion,
                                     ring_mask(lesion, (4.0,) * 3))["ratio"]
    assert FusionMetric("lesion_ratio")(fused, with_mask).item() == pytest.approx(expected)
    assert expected != pytest.approx(FusionMetric("lesion_ratio")(fused, sources).item())
    assert FusionMetric("SD")(fused, with_mask).item() == pytest.approx(FusionMetric("SD")(fused, sources).item())


def test_metric_mean_scores_each_image_once_for_the_mean_and_the_reports(monkeypatch):
    batches = [lesion_volume(spacing=2.0), lesion_volume(spacing=4.0)]
    calls = []
    compute = FusionMetric._compute_tensor
    monkeypatch.setattr(FusionMetric, "_compute_tensor", lambda self, *a, **k: calls.append(self.name) or compute(self, *a, **k))
    engine = Engine(lambda engine, batch: {"pred": batch[0], "image": batch[1]})
    parts = {name: FusionMetricHandler(name) for name in ("QABF", "lesion_ratio")}
    metric_mean(list(parts.values())).attach(engine, "selection")  # the key metric attaches first, as in MONAI
    for name, handler in parts.items():
        handler.attach(engine, name)
    engine.run(batches, max_epochs=1)
    assert sorted(calls) == ["QABF", "QABF", "lesion_ratio", "lesion_ratio"]  # once per batch and metric
    expected = [np.mean([FusionMetric(name)(*batch).item() for batch in batches]) for name in parts]
    assert [engine.state.metrics[name] for name in parts] == pytest.approx(expected)
    assert engine.state.metrics["selection"] == pytest.approx(np.mean(expected))
    assert 0.1 < expected[1] < 0.9


def test_window_pairs_keep_the_affine_for_each_window():
    image = MetaTensor(torch.rand(1, 3, 8, 8, 2), affine=torch.diag(torch.tensor([2.0, 3.0, 4.0, 1.0])))
    fused, sources = window_pairs({"pred": torch.rand(1, 2, 8, 8, 2), "image": image})
    assert fused.shape == (2, 1, 8, 8, 2) and sources.shape == (2, 2, 8, 8, 2)
    assert sources.affine.shape == (2, 4, 4)
    assert torch.equal(sources.affine[1], image.affine)
    label = torch.rand(1, 1, 8, 8, 2)
    _, with_label = window_pairs({"pred": torch.rand(1, 2, 8, 8, 2), "image": image, "label": label})
    assert with_label.shape == (2, 3, 8, 8, 2) and torch.equal(with_label[1, 2], label[0, 0])
    assert torch.equal(with_label[1, :2], torch.stack([image[0, 1], image[0, 2]]))


def test_a_mean_of_no_metrics_is_rejected():
    with pytest.raises(ValueError, match="at least one metric"):
        metric_mean([])


def test_lesion_ratio_of_a_2d_slice_uses_its_in_plane_spacing():
    """A (B, 2, H, W) sample is a volume of one slice: its ring is measured with the affine's in-plane spacing."""
    from pipeline.metrics.lesion import lesion_contrast_ratio, lesion_mask_from_pet, ring_mask

    fused, sources = lesion_volume(spacing=3.0)
    fused_2d, pet = fused[..., 3], sources[0, 1, ..., 3].numpy()
    sources_2d = MetaTensor(sources[..., 3].as_tensor(), affine=torch.diag(torch.tensor([3.0, 3.0, 1.0])))
    lesion = lesion_mask_from_pet(pet[..., None])
    expected = lesion_contrast_ratio(fused_2d[0, 0].numpy()[..., None], pet[..., None], lesion,
                                     ring_mask(lesion, (3.0, 3.0, 1.0)))["ratio"]
    assert FusionMetric("lesion_ratio")(fused_2d, sources_2d).item() == pytest.approx(expected)
