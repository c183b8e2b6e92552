"""Render 2-D slices as RGB pictures for MLflow, previews and reports.

Arrays arrive in the pipeline's ``(X, Y)`` slice layout: axial slices of a volume whose voxel axes are stored in
any order (DICOM: X = column, Y = row; NIfTI: as the file's writer chose). Given the volume's affine, a picture is
drawn in radiological display layout, anterior up and the patient's left on the viewer's right, whatever the
order; without one, as a DICOM frame stores it (rows = Y), the layout of the colour DICOM series.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform
from PIL import Image, ImageDraw, ImageFont

ArrayLike = np.ndarray | torch.Tensor

# Display rows run from anterior to posterior, columns from the patient's right to left (nibabel axis codes).
DISPLAY_AXCODES = ("P", "L")
# Rows = Y, columns = X: the transpose, as a DICOM frame stores an (X, Y) slice.
STORED_LAYOUT = np.array([[1.0, 1.0], [0.0, 1.0]])
LABEL_SIZES = (8, 24)
"""The column labels' font size in pixels, at least and at most: larger tiles, larger text."""


def _numpy(values: ArrayLike) -> np.ndarray:
    """A tensor's values as an array (slices and affines come as either)."""
    return values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)


def display_orientation(affine: ArrayLike | None) -> np.ndarray:
    """The nibabel orientation transform from an ``(X, Y)`` axial slice to display layout (:data:`DISPLAY_AXCODES`).

    ``affine``: the volume's 4 x 4 voxel -> RAS mm affine (a MetaTensor's), the one source of what X and Y are in the
    patient, so a NIfTI stored with rows flipped (as dcm2niix writes) is drawn as its DICOM is; ``None`` gives
    :data:`STORED_LAYOUT`. A volume whose slices are not axial is a ValueError (the loaders restack those).
    """
    if affine is None:
        return STORED_LAYOUT
    in_plane = io_orientation(_numpy(affine).astype(np.float64))[:2]
    return ornt_transform(in_plane, axcodes2ornt(DISPLAY_AXCODES))


def _display(slice_xy: ArrayLike, affine: ArrayLike | None) -> np.ndarray:
    """(X, Y) slice -> (rows, cols) float array in [0, 1], laid out by :func:`display_orientation`."""
    shown = apply_orientation(np.squeeze(_numpy(slice_xy)), display_orientation(affine))
    return np.clip(shown.astype(np.float32), 0.0, 1.0)


def to_uint8(slice_xy: ArrayLike, affine: ArrayLike | None = None) -> np.ndarray:
    """Grey (rows, cols, 3) uint8 picture of a slice in [0, 1], laid out by :func:`display_orientation`."""
    grey = np.round(_display(slice_xy, affine) * 255.0).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


# DICOM's Hot Iron palette (PS3.6 Annex B), the usual PET display: black-red-yellow-white. Each of R, G, B is a ramp
# clip(value * scale - offset, 0, 1).
HOT_IRON_RAMPS = ((2.0, 0.0), (2.0, 1.0), (4.0, 3.0))


def hot_iron(values: np.ndarray) -> np.ndarray:
    """:data:`HOT_IRON_RAMPS` of ``values`` in [0, 1]: RGB in [0, 1] on a new last axis."""
    return np.stack([np.clip(values * scale - offset, 0.0, 1.0) for scale, offset in HOT_IRON_RAMPS], axis=-1)


def pet_overlay(ct_xy: ArrayLike, pet_xy: ArrayLike, opacity: float = 0.5,
                affine: ArrayLike | None = None) -> np.ndarray:
    """Colour PET blended on grey CT, weighted by uptake so cold regions keep the CT visible; laid out by
    :func:`display_orientation`.

    ``(1 - a) ct + a hot_iron(pet)`` with ``a = opacity * pet``, formed one colour plane at a time in one buffer
    (the colour DICOM series renders every slice of a study: 5x faster than on whole RGB arrays, the same bytes).
    """
    ct, pet = _display(ct_xy, affine), _display(pet_xy, affine)
    alpha = opacity * pet
    grey = (1.0 - alpha) * ct
    picture = np.empty((*pet.shape, 3), dtype=np.uint8)
    plane = np.empty_like(pet)
    for channel, (scale, offset) in enumerate(HOT_IRON_RAMPS):
        np.multiply(pet, scale, out=plane)
        np.subtract(plane, offset, out=plane)
        np.clip(plane, 0.0, 1.0, out=plane)
        plane *= alpha
        plane += grey
        np.clip(plane, 0.0, 1.0, out=plane)
        plane *= 255.0
        picture[..., channel] = np.round(plane, out=plane)
    return picture


def joined(tiles: Sequence[np.ndarray], axis: int, gap: int) -> np.ndarray:
    """RGB tiles concatenated along ``axis`` (1: side by side, 0: stacked), ``gap`` white pixels apart."""
    gap_shape = list(tiles[0].shape)
    gap_shape[axis] = gap
    spacer = np.full(gap_shape, 255, dtype=np.uint8)
    return np.concatenate([piece for tile in tiles for piece in (tile, spacer)][:-1], axis=axis)


def column_labels(ct_window: str, fused: Iterable[tuple[str, str]], pet: str = "PET") -> list[str]:
    """The names of a picture's columns: ``CT <window>``, ``pet``, then ``<method> <window>`` for each
    ``(method, window)`` in ``fused``, one wording for the preview, the lesion report and MLflow."""
    return [f"CT {ct_window}", pet, *(f"{method} {window}" for method, window in fused)]


def labelled(picture: np.ndarray, labels: Sequence[str], tile_width: int, gap: int) -> np.ndarray:
    """``picture`` (columns of tiles ``tile_width`` wide, ``gap`` apart) under a white band naming each column in
    black, so a picture read away from its files (in MLflow, a report, a folder) says which window and method each
    tile is. One font size for all labels: the largest, within :data:`LABEL_SIZES`, at which the longest fits."""
    columns = (picture.shape[1] + gap) // (tile_width + gap)
    if len(labels) != columns:
        raise ValueError(f"{len(labels)} labels for {columns} columns")
    widest = max(labels, key=len)
    size = LABEL_SIZES[1]
    while size > LABEL_SIZES[0] and ImageFont.load_default(size).getlength(widest) > tile_width - 2:
        size -= 1
    font = ImageFont.load_default(size)
    band = Image.new("RGB", (picture.shape[1], size + size // 2), "white")
    draw = ImageDraw.Draw(band)
    for column, label in enumerate(labels):
        centre = column * (tile_width + gap) + tile_width / 2
        draw.text((centre, band.height / 2), label, fill="black", font=font, anchor="mm")
    return np.concatenate([np.asarray(band), picture], axis=0)


def fusion_panel(ct_xy: ArrayLike, pet_xy: ArrayLike, *fused_xy: ArrayLike, gap: int = 4,
                 affine: ArrayLike | None = None, labels: Sequence[str] | None = None) -> np.ndarray:
    """CT | PET | fused image(s) side by side, separated by a thin white gap, laid out by ``affine`` (the volume's:
    see :func:`display_orientation`), under a band naming them where ``labels`` (one per tile) are given."""
    tiles = [to_uint8(slice_xy, affine) for slice_xy in (ct_xy, pet_xy, *fused_xy)]
    picture = joined(tiles, axis=1, gap=gap)
    return picture if labels is None else labelled(picture, labels, tiles[0].shape[1], gap)
