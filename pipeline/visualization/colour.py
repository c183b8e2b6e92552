"""The colour fusion a PET/CT reader expects: hot-iron PET over the grey fused image, as an RGB volume.

The PET channel is SUV scaled to [0, 1] by the SUV ceiling (``--suv-max``): black is SUV 0, white
is the ceiling and above. Uptake sets the opacity, so cold regions show the grey image underneath.
"""

from __future__ import annotations

import numpy as np
import torch

from pipeline.visualization.panels import pet_overlay


def colour_fusion(grey: torch.Tensor, pet: torch.Tensor) -> np.ndarray:
    """``(Z, rows, columns, 3)`` uint8 RGB frames from ``(1, X, Y, Z)`` grey and PET volumes in [0, 1]."""
    columns, rows, slices = grey.shape[1:]
    frames = np.empty((slices, rows, columns, 3), dtype=np.uint8)  # filled in place: no list of frames to stack
    for z, frame in enumerate(frames):
        frame[...] = pet_overlay(grey[0, ..., z], pet[0, ..., z])
    return frames
