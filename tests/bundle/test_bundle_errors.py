"""The bundle workflows as a MONAI user runs them: errors are one line, NIfTI input takes the PET's units."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from monai.bundle import run

from pipeline.phantom import make_phantom

REPO_ROOT = Path(__file__).resolve().parents[2]
INFERENCE = REPO_ROOT / "bundles" / "dcif_gan" / "configs" / "inference.json"


def test_a_missing_checkpoint_is_one_line_and_a_failed_exit(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "monai.bundle", "run", "inference", "--config_file", str(INFERENCE),
                             "--checkpoint", str(tmp_path / "absent.pt"), "--output_dir", str(tmp_path / "out")],
                            capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)

    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("monai.bundle run inference: error: no dcif_gan checkpoint found at ")
    assert "absent.pt" in last


def test_an_error_inside_the_engine_is_one_line_too(tmp_path: Path, tiny_geometry: dict) -> None:
    """ignite logs its abort (with the failing transform's address) on the console: left out, the error says it."""
    study = make_phantom(tmp_path / "phantom", ct_shape=tiny_geometry["size"], ct_spacing=tiny_geometry["spacing"])
    result = subprocess.run([sys.executable, "-m", "monai.bundle", "run", "inference", "--config_file", str(INFERENCE),
                             "--input", str(study.ct_nifti.parent), "--method", "laplacian",
                             "--output_dir", str(tmp_path / "out")],
                            capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)

    assert result.returncode != 0
    errors = [line for line in (result.stdout + result.stderr).splitlines() if " ERROR " in line or ": error: " in line]
    assert len(errors) == 1 and errors[0].startswith("monai.bundle run inference: error: "), errors
    assert "PET header lacks Units" in errors[0]


def test_nifti_input_takes_the_pet_units_or_a_factor_from_the_config(tmp_path: Path, tiny_geometry: dict) -> None:
    """NIfTI holds no units: the PET is read as SUV (``--pet_units GML``), or scaled by ``--pet_factor``."""
    study = make_phantom(tmp_path / "phantom", ct_shape=tiny_geometry["size"], ct_spacing=tiny_geometry["spacing"])
    fused = {}
    for name, pet in {"units": {"pet_units": "GML"}, "factor": {"pet_factor": 1.0}}.items():
        run("inference", config_file=str(INFERENCE), input=str(study.ct_nifti.parent), output_dir=str(tmp_path / name),
            method="laplacian", windows=["lung"], **pet)
        (found,) = (tmp_path / name).rglob("fused_laplacian_lung.nii.gz")
        fused[name] = nib.load(found).get_fdata()
    np.testing.assert_array_equal(fused["factor"], fused["units"])  # the phantom's NIfTI PET is SUV: factor 1
