"""The bundle workflows as a MONAI user runs them: errors are one line, NIfTI input takes the PET's units, an unusable
output folder or device stops the run before any study is read, and the command never prints a study's folder nor
leaves it in its executed config."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import run

from pipeline.errors import DcifError
from pipeline.phantom import make_phantom

REPO_ROOT = Path(__file__).resolve().parents[2]
INFERENCE = REPO_ROOT / "bundles" / "dcif_gan" / "configs" / "inference.json"
EVALUATE = INFERENCE.with_name("evaluate.json")
LAYERS = {"inference": [str(INFERENCE)], "evaluate": [str(INFERENCE), str(EVALUATE)],
          "training": [str(INFERENCE.with_name("train.json"))]}
"""Each workflow's config files: evaluate.json is an override layered on inference.json."""


def _command(workflow: str, *options: str) -> subprocess.CompletedProcess:
    """``python -m monai.bundle run WORKFLOW`` with ``options``, as a user types it."""
    layers = str(LAYERS[workflow]).replace(" ", "")  # a list without spaces, for fire
    return subprocess.run([sys.executable, "-m", "monai.bundle", "run", workflow, "--config_file", layers, *options],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)


def _our_error(workflow: str, **overrides) -> str:
    """The message of the DcifError that ``workflow``, run in-process with ``overrides``, ends with."""
    with pytest.raises(Exception) as raised:
        run(workflow, config_file=LAYERS[workflow], **overrides)
    error: BaseException | None = raised.value
    while error is not None and not isinstance(error, DcifError):
        error = error.__cause__ or error.__context__
    assert error is not None, raised.value
    return str(error)


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


@pytest.mark.parametrize(("workflow", "output", "problem"), [("inference", "", "File exists"),
                                                              ("evaluate", "out", "Not a directory")])
def test_with_tracking_an_output_folder_that_cannot_be_made_is_one_line(workflow, output, problem, tmp_path):
    """``--tracking`` makes the output folder while MONAI builds the workflow, before the config's ``initialize``."""
    in_the_way = tmp_path / "a_file"
    in_the_way.write_text("")
    output_dir = in_the_way / output
    result = _command(workflow, "--tracking", "mlflow", "--output_dir", str(output_dir))

    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == f"monai.bundle run {workflow}: error: {output_dir}: {problem}"


@pytest.mark.parametrize("workflow", ["inference", "evaluate"])
@pytest.mark.parametrize(("output", "problem"), [("", "not a folder"), ("out", "Not a directory")])
def test_an_unusable_output_folder_stops_the_run_before_any_study_is_read(workflow, output, problem, tmp_path):
    """It was found only once every study was fused; an absent input, read first of the studies, says it is not."""
    in_the_way = tmp_path / "a_file"
    in_the_way.write_text("")
    output_dir = in_the_way / output
    message = _our_error(workflow, input=str(tmp_path / "absent"), output_dir=str(output_dir))
    assert message == f"{output_dir}: cannot use as output folder ({problem})"


@pytest.mark.parametrize(("workflow", "setting", "value", "meaning"), [
    ("inference", "every_k", "abc", "a whole number, 1 or more"),  # was: '<' not supported between 'str' and 'int'
    ("evaluate", "every_k", 2.5, "a whole number, 1 or more"),  # was: slice indices must be integers
    ("inference", "suv_max", 0, "a number above 0"),  # was: width must be positive
    ("inference", "sw_batch_size", 0, "a whole number, 1 or more"),  # was: range() arg 3 must not be zero
    ("inference", "pet_factor", "abc", "a number above 0, or null"),
    ("training", "epochs", "abc", "a whole number, 1 or more"),
])
def test_a_setting_of_the_wrong_kind_names_the_option_and_what_it_takes(workflow, setting, value, meaning, tmp_path):
    message = _our_error(workflow, input=str(tmp_path / "absent"), output_dir=str(tmp_path / "out"), **{setting: value})
    assert message == f"--{setting} {value!r}: must be {meaning}"
    assert not (tmp_path / "out").exists()  # refused before anything is made


@pytest.mark.parametrize("device", ["cuda", "$torch.device('cuda')"])
def test_a_missing_gpu_is_said_as_fuse_batch_says_it_before_any_study_is_read(device, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    message = _our_error("inference", input=str(tmp_path / "absent"), output_dir=str(tmp_path / "out"), device=device)
    assert message == "--device cuda: no CUDA device is available on this machine"


def test_the_command_never_prints_the_study_folder_it_was_given(tmp_path: Path, tiny_geometry: dict) -> None:
    """MONAI echoes every argument of the command, and hospital exports name study folders by patient."""
    make_phantom(tmp_path / "DOE_JOHN", ct_shape=tiny_geometry["size"], ct_spacing=tiny_geometry["spacing"])
    result = _command("inference", "--input", str(tmp_path / "DOE_JOHN"), "--output_dir", str(tmp_path / "out"),
                      "--method", "laplacian", "--windows", "['lung']")

    assert result.returncode == 0, result.stderr[-2000:]
    assert "DOE_JOHN" not in result.stdout + result.stderr
    assert "> input: '<local path>'" in result.stdout


def test_a_run_with_tracking_that_fails_leaves_no_executed_config_naming_the_study_folder(tmp_path: Path) -> None:
    """``--tracking`` writes the executed config, with ``--input``, before the config's ``initialize``: it was redacted
    only once an engine ran, and a run failing before (an empty study folder here) left it naming the patient."""
    (tmp_path / "DOE_JOHN").mkdir()
    result = _command("inference", "--input", str(tmp_path / "DOE_JOHN"), "--output_dir", str(tmp_path / "out"),
                      "--method", "laplacian", "--tracking", "mlflow")

    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    (written,) = (tmp_path / "out").glob("config_*.json")
    assert "DOE_JOHN" not in written.read_text()
    assert '"input": "<local path>"' in written.read_text()


def test_evaluate_runs_as_the_readme_types_it(tmp_path: Path, tiny_phantom_root: Path) -> None:
    """In a fresh process: the tests that run evaluate in-process had imported ``pipeline.data`` already, and the
    command itself ended in "module 'pipeline' has no attribute 'data'"."""
    result = _command("evaluate", "--bundle_root", str(INFERENCE.parents[1]), "--dataset_dir", str(tiny_phantom_root),
                      "--phantom_studies", "2", "--val_fraction", "0.5", "--methods", "['laplacian']",
                      "--windows", "['lung']", "--output_dir", str(tmp_path / "eval"))

    assert result.returncode == 0, result.stderr[-2000:]
    assert "laplacian" in (tmp_path / "eval" / "metrics_summary.md").read_text()


def test_inference_refuses_a_study_cache_in_one_line_before_any_study_is_read(tmp_path, tiny_study_cache,
                                                                              tiny_phantom_root):
    """``--study_cache`` was ignored: inference fused a phantom of ``dataset_dir`` instead, exit status 0."""
    result = _command("inference", "--dataset_dir", str(tiny_phantom_root), "--study_cache", str(tiny_study_cache),
                      "--method", "laplacian", "--windows", "['lung']", "--output_dir", str(tmp_path / "out"))

    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == (
        f"monai.bundle run inference: error: {tiny_study_cache}: a study cache holds only the network input (8 bits, "
        "no CT to write fused volumes on): inference fuses studies from their files (--input); evaluate scores a cache")
    assert not list((tmp_path / "out").iterdir())
