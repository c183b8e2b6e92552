"""Panels show slices in display layout, side by side, with PET in colour over grey CT."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from pipeline.io.dicom import load_series
from pipeline.io.nifti import load_nifti
from pipeline.phantom import make_phantom
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


# Where each in-plane voxel axis runs (nibabel's axis codes) as a RAS direction: the slice's affine.
TOWARDS = {"L": (-1.0, 0.0, 0.0), "R": (1.0, 0.0, 0.0), "P": (0.0, -1.0, 0.0), "A": (0.0, 1.0, 0.0)}
# Every way to store an axial slice: (X, Y) running towards these. ("L", "P") is DICOM's order, ("L", "A") dcm2niix's.
STORAGE_ORDERS = [("L", "P"), ("R", "P"), ("L", "A"), ("R", "A"), ("P", "L"), ("P", "R"), ("A", "L"), ("A", "R")]


def _stored(display: np.ndarray, codes: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
    """A slice seen as ``display`` (rows anterior to posterior, columns patient right to left) stored as an (X, Y)
    array whose axes run towards ``codes``, and its volume's affine (axial slices 2 mm apart)."""
    slice_xy = display if codes[0] in "AP" else display.T  # X along the display's rows or its columns
    for axis, code in enumerate(codes):
        if code in "AR":  # against the display's direction (rows run to P, columns to L)
            slice_xy = np.flip(slice_xy, axis)
    affine = np.eye(4)
    affine[:3, 0], affine[:3, 1], affine[:3, 2] = TOWARDS[codes[0]], TOWARDS[codes[1]], (0.0, 0.0, 2.0)
    return np.ascontiguousarray(slice_xy), affine


@pytest.mark.parametrize("codes", STORAGE_ORDERS, ids="".join)
def test_every_storage_order_is_drawn_anterior_up_and_patient_left_on_the_right(codes):
    rng = np.random.default_rng(1)
    display = rng.uniform(0.0, 1.0, (5, 7)).astype(np.float32)  # not square: a transpose shows in the shape
    ct, affine = _stored(display, codes)
    pet, _ = _stored(display[::-1], codes)
    expected_ct = np.round(display * 255.0).astype(np.uint8)

    assert np.array_equal(to_uint8(ct, affine)[..., 0], expected_ct)
    as_dicom_stores = pet_overlay(display.T, display[::-1].T)
    assert np.array_equal(pet_overlay(ct, pet, affine=torch.from_numpy(affine)), as_dicom_stores)
    panel = fusion_panel(ct, pet, ct, affine=affine, gap=1)
    assert np.array_equal(panel[:, :7, 0], expected_ct) and np.array_equal(panel[:, 16:, 0], expected_ct)


def test_a_dicom_ordered_slice_is_drawn_as_stored_to_the_byte():
    """The DICOM loader's affine (rows run to the back, columns to the patient's left) changes no byte: every picture
    of a DICOM study, and the colour DICOM series drawn without one, stay as they were."""
    rng = np.random.default_rng(2)
    ct, pet = (rng.uniform(-0.2, 1.2, (9, 6)).astype(np.float32) for _ in range(2))
    affine = np.array([[-0.98, 0, 0, 250.0], [0, -0.98, 0, 230.0], [0, 0, 3.0, -700.0], [0, 0, 0, 1]])

    assert np.array_equal(to_uint8(ct, affine), to_uint8(ct))
    assert np.array_equal(pet_overlay(ct, pet, affine=affine), pet_overlay(ct, pet))
    assert np.array_equal(fusion_panel(ct, pet, ct, affine=affine), fusion_panel(ct, pet, ct))


def test_a_slice_that_is_not_axial_is_refused():
    coronal = np.diag([-1.0, 1.0, 2.0, 1.0])[:, [0, 2, 1, 3]]  # Y runs up the body, Z to the front
    with pytest.raises(ValueError):
        to_uint8(np.zeros((4, 3)), coronal)


@pytest.fixture(scope="module")
def phantom_ct(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("phantom")
    make_phantom(root, ct_shape=(64, 64, 16), ct_spacing=(6.0, 6.0, 8.0), seed=0)
    return root


def _rows_flipped(source: Path, target: Path) -> Path:
    """``source`` saved as dcm2niix saves an axial CT: rows in reverse, the origin moved so no voxel moves."""
    image = nib.load(source)
    affine = image.affine.copy()
    affine[:3, 3] += affine[:3, 1] * (image.shape[1] - 1)
    affine[:3, 1] *= -1
    flipped = nib.Nifti1Image(np.ascontiguousarray(np.asarray(image.dataobj)[:, ::-1]), affine)
    flipped.set_qform(affine, code=1)
    flipped.set_sform(affine, code=1)
    nib.save(flipped, target)
    return target


def test_the_phantom_ct_looks_the_same_from_dicom_and_from_nifti_in_either_row_order(phantom_ct, tmp_path):
    dicom = load_series(phantom_ct / "dicom" / "CT")
    nifti = load_nifti(phantom_ct / "nifti" / "ct.nii.gz", "CT")
    las = load_nifti(_rows_flipped(phantom_ct / "nifti" / "ct.nii.gz", tmp_path / "ct_las.nii.gz"), "CT")
    assert nib.aff2axcodes(las.affine.numpy()) == ("L", "A", "S")

    z = dicom.shape[-1] // 2
    drawn = [to_uint8(((volume[0, ..., z].float() + 1000.0) / 1400.0), volume.affine) for volume in (dicom, nifti, las)]
    assert np.array_equal(drawn[0], drawn[1]) and np.array_equal(drawn[0], drawn[2])
    assert np.array_equal(drawn[0], to_uint8((dicom[0, ..., z].float() + 1000.0) / 1400.0))  # as DICOM was drawn
    bone_rows = np.nonzero(drawn[2][..., 0] > (1300.0 / 1400.0) * 255)[0]  # above 300 HU: sternum, ribs, spine
    assert bone_rows.mean() > drawn[2].shape[0] / 2 + 3  # below the middle: the spine, at the back, weighs most
