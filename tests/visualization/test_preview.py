"""The preview PNG: which slices it shows, and the picture's layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.visualization.preview import preview_slices, render_preview, write_preview


def _volumes(hot_slice: int = 11) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    ct = torch.full((1, 20, 12, 16), 0.4)
    pet = torch.zeros_like(ct)
    pet[0, 5, 5, hot_slice] = 0.5  # mid-scale: "hot" colours it orange (the peak would be white)
    return ct, pet, [torch.full_like(ct, 0.8), torch.full_like(ct, 0.2)]


def test_slices_spread_over_the_candidates_and_include_the_hottest() -> None:
    _, pet, _ = _volumes(hot_slice=11)
    assert preview_slices(pet, range(2, 15)) == [2, 11, 14]
    assert preview_slices(pet, range(2, 15), count=5) == [2, 5, 8, 11, 14]
    assert preview_slices(pet, [11, 12]) == [11, 12]


def test_picture_has_a_row_per_slice_and_a_tile_per_image() -> None:
    ct, pet, fused = _volumes()
    picture = render_preview(ct, pet, fused, [3, 11])

    # Tiles are (rows = Y, columns = X); 4 tiles across, 2 slices down, 4-pixel gaps.
    assert picture.shape == (2 * 12 + 4, 4 * 20 + 3 * 4, 3) and picture.dtype == np.uint8
    assert picture[0, 0].tolist() == [102, 102, 102]  # CT 0.4 in grey
    assert picture[0, 2 * 24].tolist() == [204, 204, 204]  # first fused volume, 0.8
    hot = picture[12 + 4 + 5, 24 + 5]  # PET overlay of slice 11 at (x=5, y=5): coloured, not grey
    assert hot[0] > hot[2]


def test_written_png_reads_back(tmp_path: Path) -> None:
    ct, pet, fused = _volumes()
    path = write_preview(tmp_path / "sub" / "preview.png", ct, pet, fused)

    assert np.asarray(Image.open(path)).shape == (3 * 12 + 2 * 4, 4 * 20 + 3 * 4, 3)
    assert [p.name for p in path.parent.iterdir()] == ["preview.png"]


def test_tiles_follow_the_affine_and_a_dicom_ordered_one_changes_no_byte(tmp_path: Path) -> None:
    ct, pet, fused = _volumes()
    drawn = render_preview(ct, pet, fused, [3, 11])
    dicom_order = np.diag([-2.0, -2.0, 3.0, 1.0])  # rows run to the back, columns to the patient's left
    assert np.array_equal(render_preview(ct, pet, fused, [3, 11], affine=dicom_order), drawn)

    rows_flipped = np.diag([-2.0, 2.0, 3.0, 1.0])  # Y runs to the front, as dcm2niix stores an axial CT
    flipped = [volume.flip(2) for volume in (ct, pet, *fused)]
    path = write_preview(tmp_path / "preview.png", *flipped[:2], flipped[2:], [3, 11], affine=rows_flipped)
    assert np.array_equal(np.asarray(Image.open(path)), drawn)


def test_a_band_names_each_column_above_its_tiles() -> None:
    ct, pet, fused = _volumes()
    ct, pet, fused = (torch.nn.functional.pad(volume, (0, 0, 0, 0, 0, 100)) for volume in (ct, pet, *fused[:1]))
    plain = render_preview(ct, pet, [fused], [3, 11])
    labelled = render_preview(ct, pet, [fused], [3, 11], labels=["CT lung", "PET on CT", "dcif_gan lung"])

    band = labelled.shape[0] - plain.shape[0]
    assert band > 8 and np.array_equal(labelled[band:], plain)  # the tiles as they were, below the band
    ink = (labelled[:band] < 128).all(axis=2)
    columns = np.flatnonzero(ink.any(axis=0))
    tile = 120 + 4
    assert {int(column) // tile for column in columns} == {0, 1, 2}  # each column's label over its own tile
    assert all(column % tile < 120 for column in columns)  # none over a gap
    with pytest.raises(ValueError, match="2 labels for 3 columns"):
        render_preview(ct, pet, [fused], [3], labels=["CT", "PET"])
