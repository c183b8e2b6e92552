"""Input the app cannot fuse ends it with one clear line and a non-zero exit, never a hang."""

from __future__ import annotations

import shutil
from pathlib import Path

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


@pytest.mark.parametrize(("make_input", "problem"), [
    (_empty, "no DICOM study found"),
    (_no_pet, "the study has no PET series (Modality PT)"),
    (_two_studies, "2 studies found"),
])
def test_bad_input_fails_with_one_line(run_app, tmp_path, make_input, problem):
    input_dir = make_input(tmp_path)
    run = run_app("-i", input_dir, "-o", tmp_path / "out")
    assert run.returncode == 1, run
    assert run.last_line.startswith(f"dcif-deploy: error: {input_dir}: {problem}"), run
    assert not list((tmp_path / "out").rglob("*.dcm"))
