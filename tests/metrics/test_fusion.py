"""The fusion metric protocol: analytic cases, hand-computed values and a reference SSIM."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.metrics import SSIMMetric

from pipeline.metrics import (
    METRIC_NAMES,
    average_gradient,
    fusion_metrics,
    information_entropy,
    mutual_information,
    psnr,
    qabf,
    score_slices,
    spatial_frequency,
    ssim,
    standard_deviation,
    summarise,
)

# The product of the two Q^AB/F sigmoids at full preservation (G = 1, A_alpha = 1).
FULL_PRESERVATION = 0.9994 / (1 + math.exp(-15 * 0.5)) * 0.9879 / (1 + math.exp(-22 * 0.2))
# Q^XF where F keeps X's edge orientation at half its strength (G = 0.5, A_alpha = 1).
HALF_STRENGTH = 0.9994 / (1 + math.exp(0)) * 0.9879 / (1 + math.exp(-22 * 0.2))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def impulse_3x3() -> np.ndarray:
    """A single bright pixel: with zero-padded Sobel every pixel but the centre has an edge."""
    image = np.zeros((3, 3))
    image[1, 1] = 255.0
    return image


def test_full_preservation_constant_is_the_documented_value():
    assert FULL_PRESERVATION == pytest.approx(0.9748, abs=5e-5)


def test_constant_image_has_no_gradient_spread_or_information(rng):
    constant = np.full((16, 16), 0.4)
    scores = fusion_metrics(constant, rng.random((16, 16)), rng.random((16, 16)))
    assert scores["AG"] == scores["SF"] == scores["SD"] == scores["IE"] == 0.0


def test_flat_256_level_histogram_has_8_bits():
    every_level_once = np.arange(256).reshape(16, 16) / 255
    assert fusion_metrics(every_level_once, every_level_once, every_level_once)["IE"] == pytest.approx(8.0)


def test_perfect_fusion_scores(rng):
    image = rng.random((32, 32))
    scores = fusion_metrics(image, image, image)
    assert list(scores) == list(METRIC_NAMES)
    assert scores["SSIM"] == pytest.approx(2.0)
    assert scores["QABF"] == pytest.approx(FULL_PRESERVATION, abs=1e-12)
    assert round(scores["QABF"], 4) == 0.9748
    assert scores["MI"] == pytest.approx(2 * scores["IE"])
    assert scores["PSNR"] == math.inf


def test_mutual_information_of_an_image_with_itself_is_its_entropy(rng):
    image = rng.random((20, 20)) * 255
    assert mutual_information(image, image) == pytest.approx(information_entropy(image))


def test_entropy_by_hand():
    # Levels {0: 3 pixels, 255: 1 pixel}: H = -(3/4 log2 3/4 + 1/4 log2 1/4).
    image = np.array([[0.0, 0.0], [0.0, 255.0]])
    assert information_entropy(image) == pytest.approx(-(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25)))


def test_entropy_rounds_and_clips_to_256_levels():
    # 0.4 -> 0, 254.6 -> 255, 300 -> 255, -3 -> 0: two levels, two pixels each: 1 bit.
    assert information_entropy(np.array([[0.4, 254.6], [300.0, -3.0]])) == pytest.approx(1.0)


def test_standard_deviation_by_hand():
    # Mean 3, squared deviations 9, 1, 1, 9: population variance 20 / 4 = 5.
    assert standard_deviation(np.array([[0.0, 2.0], [4.0, 6.0]])) == pytest.approx(math.sqrt(5))


def test_spatial_frequency_by_hand():
    image = np.array([[0.0, 1.0, 3.0], [2.0, 2.0, 2.0]])
    # Row differences 1, 2, 0, 0 -> RF^2 = 5 / 4; column differences 2, 1, -1 -> CF^2 = 6 / 3.
    assert spatial_frequency(image) == pytest.approx(math.sqrt(5 / 4 + 6 / 3))


def test_average_gradient_by_hand():
    image = np.array([[0.0, 1.0, 4.0], [2.0, 3.0, 6.0]])
    # Gx per row: one-sided 1, central (4 - 0) / 2 = 2, one-sided 3; Gy = 2 everywhere (two rows).
    # AG = mean over 6 pixels of sqrt((Gx^2 + 4) / 2) = (sqrt(5/2) + sqrt(8/2) + sqrt(13/2)) / 3.
    expected = (math.sqrt(5 / 2) + math.sqrt(8 / 2) + math.sqrt(13 / 2)) / 3
    assert average_gradient(image) == pytest.approx(expected)


def test_mutual_information_by_hand():
    fused = np.array([[0.0, 0.0], [0.0, 255.0]])
    source = np.array([[0.0, 0.0], [255.0, 255.0]])
    # H(F) = -(3/4 log2 3/4 + 1/4 log2 1/4); H(A) = 1; joint cells (0,0) x2, (0,255), (255,255): H = 1.5.
    h_fused = -(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25))
    assert mutual_information(fused, source) == pytest.approx(h_fused + 1.0 - 1.5)


def test_fusion_mi_sums_both_sources():
    fused = np.array([[0.0, 0.0], [0.0, 1.0]])
    ct = np.array([[0.0, 0.0], [1.0, 1.0]])
    h_fused = -(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25))
    # MI(F, A) as in the hand case above, plus MI(F, F) = H(F).
    expected = (h_fused + 1.0 - 1.5) + h_fused
    assert fusion_metrics(fused, ct, fused, names=("MI",))["MI"] == pytest.approx(expected)


def test_psnr_by_hand():
    fused = np.array([[10.0, 20.0], [30.0, 40.0]])
    ct = np.array([[11.0, 19.0], [32.0, 40.0]])  # squared errors 1, 1, 4, 0: MSE 1.5
    pet = fused + 4.0  # MSE 16
    assert psnr(fused, ct, pet) == pytest.approx(10 * math.log10(255**2 / ((1.5 + 16) / 2)))


def test_ssim_by_hand_on_constant_images():
    # Constant images: every variance and covariance is 0, so SSIM is the luminance term only,
    # (2 * 100 * 50 + C1) / (100^2 + 50^2 + C1) with C1 = (0.01 * 255)^2, in each of the 2 x 2 windows.
    c1 = (0.01 * 255) ** 2
    expected = (2 * 100 * 50 + c1) / (100**2 + 50**2 + c1)
    assert ssim(np.full((12, 12), 100.0), np.full((12, 12), 50.0)) == pytest.approx(expected)


def test_ssim_matches_monai_reference(rng):
    x = rng.random((40, 48)) * 255
    y = np.clip(x + rng.normal(0, 20, x.shape), 0, 255)
    reference = SSIMMetric(spatial_dims=2, data_range=255.0, win_size=11, kernel_sigma=1.5)
    expected = reference(torch.tensor(x)[None, None], torch.tensor(y)[None, None]).item()
    assert ssim(x, y) == pytest.approx(expected, rel=1e-5)


def test_ssim_is_symmetric_and_falls_with_noise(rng):
    x = rng.random((32, 32)) * 255
    slightly, heavily = (np.clip(x + rng.normal(0, sigma, x.shape), 0, 255) for sigma in (5, 40))
    assert ssim(x, heavily) == pytest.approx(ssim(heavily, x))
    assert 1.0 > ssim(x, slightly) > ssim(x, heavily)


def test_fusion_ssim_sums_both_sources_as_each_pair_scores_alone(rng):
    """F's local moments are filtered once for both pairs: the sum is still SSIM(F, A) + SSIM(F, B), to the bit."""
    fused, ct, pet = (rng.random((23, 31)) for _ in range(3))
    expected = ssim(fused * 255, ct * 255) + ssim(fused * 255, pet * 255)
    assert fusion_metrics(fused, ct, pet, names=("SSIM",))["SSIM"] == expected
    assert expected != 2 * ssim(fused * 255, ct * 255)


def test_ssim_rejects_slices_smaller_than_its_window():
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(np.zeros((10, 20)), np.zeros((10, 20)))


def test_qabf_when_one_source_has_no_edges(rng):
    # With zero padding only an all-zero source has no gradient; then Q^AB/F = Q^AF.
    ct = rng.random((16, 16)) * 255
    assert qabf(ct, ct, np.zeros_like(ct)) == pytest.approx(FULL_PRESERVATION)


def test_qabf_by_hand_at_half_strength():
    ct = impulse_3x3()
    # F keeps every CT edge direction at half strength: G = 0.5 and A_alpha = 1 at every edge pixel.
    assert qabf(ct / 2, ct, np.zeros_like(ct)) == pytest.approx(HALF_STRENGTH)
    # PET = CT / 2 and F = CT: Q^AF is full preservation with weight gA, Q^BF is half strength
    # with weight gA / 2, so Q^AB/F = (full * 1 + half * 1/2) / (1 + 1/2).
    assert qabf(ct, ct, ct / 2) == pytest.approx((FULL_PRESERVATION + HALF_STRENGTH / 2) / 1.5)


def test_qabf_orientation_ignores_edge_polarity(rng):
    # atan (not atan2) maps opposite gradient directions to one orientation.
    ct = rng.random((16, 16)) * 255
    assert qabf(-ct, ct, np.zeros_like(ct)) == pytest.approx(FULL_PRESERVATION)


def test_qabf_is_nan_without_any_source_edge():
    zeros = np.zeros((8, 8))
    assert math.isnan(qabf(np.ones((8, 8)), zeros, zeros))


def test_torch_input_with_singleton_dims_matches_numpy(rng):
    fused, ct, pet = (rng.random((24, 24)) for _ in range(3))
    from_torch = fusion_metrics(*(torch.tensor(x, dtype=torch.float32)[None, None] for x in (fused, ct, pet)))
    from_numpy = fusion_metrics(*(np.float32(x) for x in (fused, ct, pet)))
    assert from_torch == pytest.approx(from_numpy)


@pytest.mark.parametrize(
    ("fused_shape", "message"),
    [((2, 16, 16), "2-D"), ((16, 17), "equal shapes")],
)
def test_bad_shapes_are_rejected(fused_shape, message):
    with pytest.raises(ValueError, match=message):
        fusion_metrics(np.zeros(fused_shape), np.zeros((16, 16)), np.zeros((16, 16)))


def test_unknown_metric_name_lists_the_available_ones():
    with pytest.raises(ValueError, match="available: AG, SF, SSIM"):
        fusion_metrics(np.zeros((4, 4)), np.zeros((4, 4)), np.zeros((4, 4)), names=("VIF",))


def test_summarise_reports_mean_population_std_and_count_of_finite_values():
    rows = [{"PSNR": 30.0, "AG": 1.0}, {"PSNR": 34.0, "AG": 3.0}, {"PSNR": math.inf, "AG": 5.0}]
    summary = summarise(rows)
    assert summary["PSNR"] == {"mean": 32.0, "std": 2.0, "n": 2}
    assert summary["AG"] == pytest.approx({"mean": 3.0, "std": math.sqrt(8 / 3), "n": 3})


def test_summarise_of_a_metric_without_finite_values_is_nan():
    summary = summarise([{"QABF": math.nan}])
    assert math.isnan(summary["QABF"]["mean"]) and summary["QABF"]["n"] == 0


def test_score_slices_scores_each_channel_against_its_own_ct_window_slice_by_slice():
    rng = np.random.default_rng(3)
    image = rng.random((3, 16, 16, 4))  # lung window, mediastinal window, PET
    fused = rng.random((4, 16, 16, 4))  # (lung, a), (lung, b), (mediastinal, a), (mediastinal, b)
    scores = list(score_slices(fused, image, [0, 0, 1, 1], [1, 3], names=("MI", "SSIM")))
    assert [(c, z) for c, z, _ in scores] == [(0, 1), (1, 1), (0, 3), (1, 3), (2, 1), (3, 1), (2, 3), (3, 3)]
    for c, z, metrics in scores:
        window = 0 if c < 2 else 1
        assert metrics == fusion_metrics(fused[c, ..., z], image[window, ..., z], image[2, ..., z], ("MI", "SSIM"))


@pytest.mark.parametrize("bad", [math.nan, math.inf])
@pytest.mark.parametrize("source", ["fused", "ct", "pet"])
def test_a_non_finite_value_in_any_input_is_refused_not_scored(rng, source, bad):
    images = {name: rng.random((16, 16)) for name in ("fused", "ct", "pet")}
    images[source][3, 4] = bad
    # MI alone once counted a NaN as grey level 0 and the means dropped it; every metric is refused now.
    for names in (("MI",), ("IE",), METRIC_NAMES):
        with pytest.raises(ValueError, match=f"{source} holds 1 NaN or infinite value"):
            fusion_metrics(images["fused"], images["ct"], images["pet"], names)


def test_score_slices_names_the_slice_and_channel_of_a_non_finite_value():
    rng = np.random.default_rng(4)
    image, fused = rng.random((2, 16, 16, 3)), rng.random((2, 16, 16, 3))
    fused[1, 5, 5, 2] = math.nan
    with pytest.raises(ValueError, match="axial slice 2, fused channel 1: .*fused holds 1 NaN"):
        list(score_slices(fused, image, [0, 0], range(3), names=("MI",)))
