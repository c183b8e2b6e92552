"""Input the app cannot fuse ends it with one clear line and a non-zero exit, never a hang."""

from __future__ import annotations

import shutil
from pathlib import Path

import pydicom
import pytest

from pipeline.phantom import make_phantom

from .conftest import AppRun, wait_all


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
                  "RescaleSlope 'NaN' is not a number"),
}


# Input only the app's own checks catch; the problem is said of the folder by its role.
BAD = {
    "empty": (_empty, "no DICOM study found"),
    "no_pet": (_no_pet, "the study has no PET series (Modality PT)"),
    "two_studies": (_two_studies, "2 studies found"),
}


CASES = {**HOSTILE, **BAD}


def _a_file(root: Path) -> Path:
    (root / "afile").write_text("not a folder\n")
    return root / "afile"


# Folders the app cannot use, given as options (the SDK's argparse refuses them) or in the SDK's environment
# variables: (the app's arguments, its environment) for a scratch folder, and the line it ends with.
FOLDERS = {
    "missing_input": (lambda root: (("-i", root / "nonexist", "-o", root / "out"), {}),
                      "<input folder>: input folder not found"),
    "output_a_file": (lambda root: (("-i", _empty(root), "-o", _a_file(root)), {}), "<output folder>: not a folder"),
    "output_variable_a_file": (lambda root: (("-i", _empty(root)), {"HOLOSCAN_OUTPUT_PATH": str(_a_file(root))}),
                               "<output folder>: not a folder"),
}


@pytest.fixture(scope="module")
def app_runs(start_app, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, AppRun]]:
    """(scratch folder, run) of every case, the apps started together: each is ~12 s of single-threaded SDK
    import, so the cores import several at once."""
    roots = {case: tmp_path_factory.mktemp(case) for case in (*CASES, *FOLDERS)}
    inputs = {case: make_input(roots[case]) for case, (make_input, _) in CASES.items()}
    started = {case: start_app(roots[case] / "app_cwd", "-i", inputs[case], "-o", roots[case] / "out")
               for case in CASES}
    for case, (arguments, _) in FOLDERS.items():
        args, env = arguments(roots[case])
        started[case] = start_app(roots[case] / "app_cwd", *args, env=env)
    return {case: (roots[case], run) for case, run in wait_all(started).items()}


def _failed_cleanly(root: Path, run: AppRun) -> None:
    assert run.returncode == 1, run
    assert str(root) not in run.stderr  # files are named as in the batch report, folders by role
    assert not list((root / "out").rglob("*.dcm"))


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_input_fails_with_one_line(app_runs, case):
    root, run = app_runs[case]
    _failed_cleanly(root, run)
    assert run.last_line.startswith("dcif-deploy: error: ") and HOSTILE[case][1] in run.last_line, run


@pytest.mark.parametrize("case", BAD)
def test_bad_input_fails_with_one_line(app_runs, case):
    root, run = app_runs[case]
    _failed_cleanly(root, run)
    assert run.last_line.startswith(f"dcif-deploy: error: <input folder>: {BAD[case][1]}"), run


@pytest.mark.parametrize("case", FOLDERS)
def test_a_folder_the_app_cannot_use_fails_with_one_line_naming_it_by_role(app_runs, case):
    root, run = app_runs[case]
    _failed_cleanly(root, run)
    assert "usage:" not in run.stderr, run  # not the SDK's argparse refusal, with its exit status 2
    assert run.last_line == f"dcif-deploy: error: {FOLDERS[case][1]}", run
