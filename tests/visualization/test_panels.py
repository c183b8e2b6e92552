"""Panels show slices in display layout, side by side, with PET in colour over grey CT."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.visualization import fusion_panel, hot_iron, pet_overlay, to_uint8


def test_grey_tile_is_transposed_to_rows_by_columns_and_scaled():
    slice_xy = np.zeros((4, 3), dtype=np.float32)
    slice_xy[3, 0] = 1.0  # last column, first row in display
    tile = to_uint8(slice_xy)
    assert tile.shape == (3, 4, 3) and tile.dtype == np.uint8
    assert tile[0, 3].tolist() == [255, 255, 255] and tile[1, 1].tolist() == [0, 0, 0]


def test_panel_puts_ct_pet_and_fused_side_by_side():
    ct, pet, fused = torch.zeros(1, 8, 6), torch.ones(1, 8, 6), torch.full((1, 8, 6), 0.5)
    panel = fusion_panel(ct, pet, fused, gap=2)
    assert panel.shape == (6, 3 * 8 + 2 * 2, 3)
    assert panel[:, :8].max() == 0 and panel[:, 10:18].min() == 255 and panel[0, 20, 0] == 128
    assert (panel[:, 8:10] == 255).all()


def test_overlay_keeps_cold_regions_grey_and_colours_uptake():
    ct = np.full((5, 5), 0.5, dtype=np.float32)
    pet = np.zeros((5, 5), dtype=np.float32)
    pet[2, 2] = 0.5  # mid uptake: orange on the hot scale (its top is white)
    picture = pet_overlay(ct, pet, opacity=0.6)
    cold, hot = picture[0, 0], picture[2, 2]
    assert cold[0] == cold[1] == cold[2]  # no uptake: the CT grey shows through
    assert hot[0] > hot[2]  # uptake: warm colour


@pytest.mark.parametrize("opacity", [0.5, 0.8])
def test_overlay_is_the_uptake_weighted_blend_on_whole_rgb_arrays_to_the_byte(opacity):
    rng = np.random.default_rng(0)
    ct, pet = (rng.uniform(-0.2, 1.2, (37, 23)).astype(np.float32) for _ in range(2))  # out of range too
    shown_ct, shown_pet = (np.clip(values.T, 0.0, 1.0) for values in (ct, pet))  # display layout, clipped
    alpha = opacity * shown_pet[..., None]
    blended = (1.0 - alpha) * shown_ct[..., None] + alpha * hot_iron(shown_pet)
    expected = np.round(np.clip(blended, 0.0, 1.0) * 255.0).astype(np.uint8)
    picture = pet_overlay(torch.from_numpy(ct), pet, opacity)
    assert picture.shape == (23, 37, 3) and np.array_equal(picture, expected)
