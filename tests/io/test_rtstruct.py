"""Tumour contours from an RTSTRUCT, filled on the fused grid: where the lesion measures look."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.errors import InputError
from pipeline.io.rtstruct import polygon_mask, rtstruct_mask

# index (i, j, k) -> RAS (-2 i, -2 j, 3 k), i.e. LPS (2 i, 2 j, 3 k)
AFFINE = np.diag([-2.0, -2.0, 3.0, 1.0])
SHAPE = (12, 12, 5)


def square(i0: float, i1: float, j0: float, j1: float, k: float) -> np.ndarray:
    """A closed square contour in LPS mm whose corners are these voxel indices on slice ``k``."""
    corners = [(i0, j0), (i1, j0), (i1, j1), (i0, j1)]
    return np.array([[2 * i, 2 * j, 3 * k] for i, j in corners], dtype=float)


def test_a_contour_fills_its_voxels_on_its_own_slice(dicom_factory):
    path = dicom_factory.rtstruct("rs.dcm", contours={"GTV": [square(2, 5, 3, 6, 2)]})
    mask = rtstruct_mask(path, AFFINE, SHAPE)
    expected = np.zeros(SHAPE, bool)
    expected[2:6, 3:7, 2] = True  # corners and edges included
    np.testing.assert_array_equal(mask, expected)
    assert np.array_equal(rtstruct_mask(path.parent, AFFINE, SHAPE), mask)  # or the folder holding it


def test_voxels_are_inside_by_their_centres_not_by_a_touched_pixel():
    """A square from 2.2 to 5.2 holds the centres 3, 4 and 5 only (a pixel-touching fill took 2 too: half a voxel
    larger and shifted); the same square on the centres holds 2 to 5, its edges included."""
    off = polygon_mask(np.array([(2.2, 2.2), (5.2, 2.2), (5.2, 5.2), (2.2, 5.2)]), (8, 8))
    on = polygon_mask(np.array([(2.0, 2.0), (5.0, 2.0), (5.0, 5.0), (2.0, 5.0)]), (8, 8))
    assert np.flatnonzero(off.any(axis=1)).tolist() == np.flatnonzero(off.any(axis=0)).tolist() == [3, 4, 5]
    assert np.flatnonzero(on.any(axis=1)).tolist() == np.flatnonzero(on.any(axis=0)).tolist() == [2, 3, 4, 5]
    assert off.sum() == 9 and on.sum() == 16


def test_random_polygons_hold_the_centres_a_point_in_polygon_test_finds():
    path = pytest.importorskip("matplotlib.path")
    rng = np.random.default_rng(0)
    i, j = np.meshgrid(np.arange(30), np.arange(20), indexing="ij")
    centres = np.stack([i.ravel(), j.ravel()], axis=1)
    for _ in range(20):
        angles = np.sort(rng.uniform(0, 2 * np.pi, 12))
        radii = rng.uniform(3, 12, 12)
        polygon = np.stack([14.3 + radii * np.cos(angles), 9.7 + radii * np.sin(angles)], axis=1)  # some off the grid
        expected = path.Path(polygon).contains_points(centres).reshape(30, 20)
        clear = _distance_to_edges(centres, polygon).reshape(30, 20) > 0.01  # on an edge is inside by our rule
        np.testing.assert_array_equal(polygon_mask(polygon, (30, 20))[clear], expected[clear])


def _distance_to_edges(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    start, end = polygon, np.roll(polygon, -1, axis=0)
    along = np.clip(((points[:, None] - start) * (end - start)).sum(-1) / ((end - start) ** 2).sum(-1), 0, 1)
    return np.linalg.norm(start + along[..., None] * (end - start) - points[:, None], axis=-1).min(axis=1)


def test_an_inner_contour_is_a_hole_and_one_off_the_grid_is_left_out(dicom_factory):
    polygons = [square(1, 9, 1, 9, 3), square(4, 6, 4, 6, 3), square(1, 3, 1, 3, 40)]
    mask = rtstruct_mask(dicom_factory.rtstruct("rs.dcm", contours={"GTV": polygons}), AFFINE, SHAPE)
    assert mask[1, 1, 3] and mask[9, 9, 3] and mask[3, 5, 3] and not mask[5, 5, 3]
    assert mask[..., 3].sum() == 81 - 9 and mask.sum() == mask[..., 3].sum()



def test_planes_closer_than_the_slices_add_up_instead_of_cancelling(dicom_factory):
    """Contours drawn on the PET's planes, two of them nearest one slice of the coarser grid (k = 2 and 2.3)."""
    polygons = [square(2, 5, 3, 6, 2), square(2, 5, 3, 6, 2.3), square(3, 4, 4, 5, 2.3)]  # the last: a hole at 2.3
    mask = rtstruct_mask(dicom_factory.rtstruct("rs.dcm", contours={"GTV": polygons}), AFFINE, SHAPE)
    expected = np.zeros(SHAPE, bool)
    expected[2:6, 3:7, 2] = True  # plane 2.3's hole is covered by plane 2's square
    np.testing.assert_array_equal(mask, expected)

def test_a_named_roi_is_chosen_and_an_unknown_one_is_refused_by_name(dicom_factory):
    path = dicom_factory.rtstruct("rs.dcm", contours={"Body": [square(0, 11, 0, 11, 1)],
                                                      "GTV_Mass_PET": [square(2, 3, 2, 3, 1)]})
    assert rtstruct_mask(path, AFFINE, SHAPE).sum() == 144  # the first ROI by default
    assert rtstruct_mask(path, AFFINE, SHAPE, roi="GTV_Mass_PET").sum() == 4
    with pytest.raises(InputError, match="no ROI named 'GTV'; its ROIs: Body, GTV_Mass_PET"):
        rtstruct_mask(path, AFFINE, SHAPE, roi="GTV")


def test_files_that_are_not_contours_get_one_line_naming_the_file(dicom_factory, tmp_path):
    ct = dicom_factory.series("ct")
    with pytest.raises(InputError, match=r"not an RTSTRUCT with contours \(modality 'CT'\)"):
        rtstruct_mask(sorted(ct.iterdir())[0], AFFINE, SHAPE)
    with pytest.raises(InputError, match="expected one RTSTRUCT file"):
        rtstruct_mask(ct, AFFINE, SHAPE)
    truncated = tmp_path / "rs_truncated.dcm"
    truncated.write_bytes(dicom_factory.rtstruct("whole.dcm", contours={"GTV": [square(1, 2, 1, 2, 1)]})
                          .read_bytes()[:200])
    with pytest.raises(InputError, match="rs_truncated.dcm: (unreadable RTSTRUCT|not an RTSTRUCT)"):
        rtstruct_mask(truncated, AFFINE, SHAPE)
    without = dicom_factory.rtstruct("empty.dcm")
    with pytest.raises(InputError, match="empty.dcm: not an RTSTRUCT with contours"):
        rtstruct_mask(without, AFFINE, SHAPE)
    with pytest.raises(InputError, match="lesion mask not found"):
        rtstruct_mask(tmp_path / "missing.dcm", AFFINE, SHAPE)
