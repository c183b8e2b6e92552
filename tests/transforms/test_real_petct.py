"""The data path on the real IBSI soft-tissue-sarcoma PET/CT studies (skipped when they are absent).

Each case is discovered, loaded, converted to SUV and resampled onto its CT grid, and then checked
against physiology and against the tumour contour the study ships (CT/mask/RS.dcm, an RTSTRUCT in
LPS mm, rasterised on the CT grid by the product and checked voxel for voxel against the NIfTI masks IBSI ships).
Not asserted, because it is not true: the hottest voxel of the whole crop lies inside the tumour
contour in only 13 of the 20 cases (the others have hotter uptake at the contour's edge or nearby),
so the checks compare the SUVmax inside the contour with its surroundings instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from pipeline.io.discovery import discover_studies
from pipeline.io.nifti import load_nifti
from pipeline.io.rtstruct import rtstruct_mask
from pipeline.transforms import LoadStudyd, PETToSUVd, ResampleToReferenced

BODY_HU = -500.0
SHELL_MM = 20.0  # how far around the tumour contour "its surroundings" reach


@dataclass(frozen=True)
class CaseSummary:
    case: str
    ct_shape: tuple[int, ...]
    pet_shape: tuple[int, ...]
    units: str
    body_median_suv: float
    tumour_suvmax: float
    shell_median_suv: float
    shell_p95_suv: float
    mask_dice_vs_nifti: float | None


def _surroundings(tumour: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Voxels outside the tumour within its bounding box grown by SHELL_MM (a box: cheaper than distances)."""
    margin = np.ceil(SHELL_MM / spacing).astype(int)
    voxels = np.argwhere(tumour)
    low, high = np.maximum(voxels.min(axis=0) - margin, 0), voxels.max(axis=0) + margin + 1
    box = np.zeros_like(tumour)
    box[low[0]:high[0], low[1]:high[1], low[2]:high[2]] = True
    return box & ~tumour


def _summarise(root: Path, pair) -> CaseSummary:
    case = pair.ct.folder.relative_to(root).parts[0]
    study = ResampleToReferenced(keys="pet", ref_key="ct")(PETToSUVd()(LoadStudyd()(pair)))
    ct, pet = study["ct"][0].numpy(), study["pet"][0].numpy()
    tumour = rtstruct_mask(root / case / "dicom" / "CT" / "mask" / "RS.dcm", study["ct"].affine, ct.shape)
    body = ct > BODY_HU
    shell = _surroundings(tumour, np.linalg.norm(study["ct"].affine.numpy()[:3, :3], axis=0)) & body
    nifti_mask = root / case / "nifti" / "CT_mask.nii.gz"
    dice = None
    if nifti_mask.is_file():
        reference = load_nifti(nifti_mask, "SEG")[0].numpy() > 0.5
        dice = 2 * float((reference & tumour).sum()) / float(reference.sum() + tumour.sum())
    return CaseSummary(case, tuple(study["ct"].shape), tuple(study["pet"].shape), study["pet"].meta["Units"],
                       float(np.median(pet[body])), float(pet[tumour].max()), float(np.median(pet[shell])),
                       float(np.percentile(pet[shell], 95)), dice)


@pytest.fixture(scope="module")
def discovered(shared_petct: Path):
    return discover_studies(shared_petct)


@pytest.fixture(scope="module")
def summaries(shared_petct: Path, discovered) -> list[CaseSummary]:
    return [_summarise(shared_petct, pair) for pair in discovered.pairs]


def test_every_case_is_discovered(shared_petct: Path, discovered):
    cases = sorted(p.name for p in shared_petct.iterdir() if (p / "dicom").is_dir())
    assert not discovered.failures
    assert sorted(pair.ct.folder.relative_to(shared_petct).parts[0] for pair in discovered.pairs) == cases
    for pair in discovered.pairs:
        assert pair.ct.folder.parts[-2:] == ("CT", "image") and pair.pet.folder.parts[-2:] == ("PET", "image")
    # only non-DICOM files (NIfTI copies, licence notes) are problems; RTSTRUCTs are skipped without complaint
    assert all("not a DICOM file" in problem.reason for problem in discovered.problems)
    assert not any(problem.path.suffix == ".dcm" for problem in discovered.problems)


def test_pet_is_resampled_onto_the_ct_grid(summaries):
    for summary in summaries:
        assert summary.pet_shape == summary.ct_shape, summary.case
        assert summary.units == "SUVbw", summary.case  # stored as GML (already SUV): unchanged


def test_body_is_mostly_low_uptake(summaries):
    for summary in summaries:
        assert summary.body_median_suv < 1.5, summary


def test_tumour_stands_out_from_its_surroundings(summaries):
    for summary in summaries:
        assert summary.tumour_suvmax > 2.5, summary
        assert summary.tumour_suvmax > 5.0 * summary.shell_median_suv, summary  # lowest ratio seen: 7.0
        assert summary.tumour_suvmax > 2.0 * summary.shell_p95_suv, summary  # lowest ratio seen: 2.5


def test_contour_rasterisation_matches_shipped_masks(summaries):
    checked = [s for s in summaries if s.mask_dice_vs_nifti is not None]
    assert checked, "no case with a NIfTI mask to cross-check the RTSTRUCT rasterisation"
    for summary in checked:
        assert summary.mask_dice_vs_nifti > 0.999, summary  # 1 (the two cases with one, CT and PET grids); 0.95 to 0.97 with the half-voxel-shifted fill of before
