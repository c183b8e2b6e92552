"""Input the app cannot fuse ends it with one clear line and a non-zero exit, never a hang."""

from __future__ import annotations

import shutil
from pathlib import Path

import pydicom
import pytest

from pipeline.phantom import make_phantom


def _phantom(root: Path, seed: int) -> Path:
    make_phantom(root, ct_shape=(32, 32, 8), ct_spacing=(12.0, 12.0, 16.0), seed=seed, write_nifti=False)
    return root / "dicom"


def _empty(root: Path) -> Path:
    (root / "input").mkdir()
    (root / "input" / "notes.txt").write_text("not DICOM\n")
    return root / "input"


def _no_pet(root: Path) -> Path:
    dicom = _phantom(root, seed=0)
    shutil.rmtree(dicom / "PET")
    return dicom


def _two_studies(root: Path) -> Path:
    for seed in (0, 1):  # each phantom seed is its own study (StudyInstanceUID)
        _phantom(root / "input" / f"study{seed}", seed)
    return root / "input"


def _edited(root: Path, modality: str, files: slice, edit) -> Path:
    """A phantom study with ``edit(dataset)`` applied to some of its ``modality`` files."""
    dicom = _phantom(root, seed=2)
    for path in sorted((dicom / modality).iterdir())[files]:
        ds = pydicom.dcmread(path)
        edit(ds)
        ds.save_as(path)
    return dicom


def _pet_elsewhere(ds: pydicom.Dataset) -> None:
    ds.ImagePositionPatient = [*ds.ImagePositionPatient[:2], float(ds.ImagePositionPatient[2]) + 2000.0]


# Two of the batch's hostile inputs (docs/hostile-inputs.md; tests/batch runs every one through the same
# loader), one found in a whole series and one in a single file's header, end the same way here. Each app
# run costs ~12 s of SDK import, so the others are left to the batch's tests.
HOSTILE = {
    "no_overlap": (lambda root: _edited(root, "PET", slice(None), _pet_elsewhere), "does not overlap its CT"),
    "nan_slope": (lambda root: _edited(root, "PET", slice(3, 4), lambda ds: setattr(ds, "RescaleSlope", "NaN")),
                  "RescaleSlope NaN is not a finite number"),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_input_fails_with_one_line(run_app, tmp_path, case):
    make_input, problem = HOSTILE[case]
    run = run_app("-i", make_input(tmp_path), "-o", tmp_path / "out")
    assert run.returncode == 1, run
    assert run.last_line.startswith("dcif-deploy: error: ") and problem in run.last_line, run
    assert str(tmp_path) not in run.stderr  # files are named as in the batch report, folders by role
    assert not list((tmp_path / "out").rglob("*.dcm"))


@pytest.mark.parametrize(("make_input", "problem"), [
    (_empty, "no DICOM study found"),
    (_no_pet, "the study has no PET series (Modality PT)"),
    (_two_studies, "2 studies found"),
])
def test_bad_input_fails_with_one_line(run_app, tmp_path, make_input, problem):
    input_dir = make_input(tmp_path)
    run = run_app("-i", input_dir, "-o", tmp_path / "out")
    assert run.returncode == 1, run
    assert run.last_line.startswith(f"dcif-deploy: error: <input folder>: {problem}"), run  # named by role
    assert not list((tmp_path / "out").rglob("*.dcm"))
