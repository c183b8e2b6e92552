"""The colour fusion volume: DICOM's Hot Iron PET over the grey image, in the DICOM frame layout."""

from __future__ import annotations

import numpy as np
import torch

from pipeline.visualization import colour_fusion, hot_iron


def test_hot_iron_is_dicoms_palette() -> None:
    ramp = hot_iron(np.array([0.0, 0.5, 0.75, 1.0]))
    assert np.allclose(ramp, [[0, 0, 0], [1, 0, 0], [1, 0.5, 0], [1, 1, 1]])


def test_colour_fusion_keeps_grey_where_cold_and_colours_uptake_on_the_right_voxel() -> None:
    grey = torch.full((1, 6, 4, 3), 0.5)  # (1, X = columns, Y = rows, Z = frames)
    pet = torch.zeros_like(grey)
    pet[0, 5, 1, 2] = 0.5  # half the SUV ceiling (Hot Iron red) at column 5, row 1, frame 2
    rgb = colour_fusion(grey, pet)

    assert rgb.shape == (3, 4, 6, 3) and rgb.dtype == np.uint8  # (frames, rows, columns, RGB)
    assert (rgb[0] == 128).all()  # no uptake: the grey image, unchanged
    hot = rgb[2, 1, 5]
    assert hot[0] > 128 > hot[1] == hot[2]  # red blended on the grey
    assert (np.delete(rgb[2].reshape(-1, 3), 1 * 6 + 5, axis=0) == 128).all()
