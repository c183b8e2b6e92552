"""The deploy app end to end: its fused DICOM series lie on the CT and equal the bundle's inference.

The reference is the bundle's way of fusing (the whole study preprocessed at once, same
FusionNetwork, same slice inferer): the app streams slabs, and its series must reproduce that
within 12-bit quantisation.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import torch

from pipeline.bundle_model import CHECKOUT_BUNDLE, bundled_checkpoint, bundled_network
from pipeline.fusion.selection import BASELINE_FALLBACK, MODEL_METHOD, build_fusers
from pipeline.fusion.streaming import fused_filename
from pipeline.io.derived_series import MAX_STORED, dicom_folder_name
from pipeline.phantom import make_phantom

from .conftest import AppRun, wait_all

QUANTUM = 0.5 / MAX_STORED + 1e-6  # the writer rounds fused * 4095 to an integer
REAL_STUDY = "STS_025"  # the smallest real study: 47 slices


def _read_sitk(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def assert_output_matches(out_dir: Path, ct_dir: Path, expected: dict[tuple[str, str], torch.Tensor]) -> None:
    """Every fused volume came out as a DICOM series on the CT grid, in the CT's study, with the expected pixels."""
    ct = _read_sitk(ct_dir)
    ct_header = pydicom.dcmread(next(ct_dir.glob("*.dcm")), stop_before_pixels=True)
    assert sorted(path.name for path in out_dir.glob("dicom_*")) == sorted(
        dicom_folder_name(method, window) for window, method in expected)
    for (window, method), volume in expected.items():
        assert (out_dir / fused_filename(window, method)).is_file()
        series_file = out_dir / dicom_folder_name(method, window) / "fused.dcm"
        header = pydicom.dcmread(series_file)
        assert header.NumberOfFrames == ct.GetSize()[2] and header.Modality == "OT"
        assert header.StudyInstanceUID == ct_header.StudyInstanceUID
        assert header.FrameOfReferenceUID == ct_header.FrameOfReferenceUID
        assert header.SeriesInstanceUID != ct_header.SeriesInstanceUID
        assert ct_header.SeriesInstanceUID in {item.SeriesInstanceUID for item in header.ReferencedSeriesSequence}
        assert len(header.ReferencedSeriesSequence) == 2  # the CT and the PET
        assert (header.Rows, header.Columns) == (ct_header.Rows, ct_header.Columns)

        fused = sitk.ReadImage(str(series_file))
        assert fused.GetSize() == ct.GetSize()
        np.testing.assert_allclose(fused.GetSpacing(), ct.GetSpacing(), atol=1e-4)
        np.testing.assert_allclose(fused.GetOrigin(), ct.GetOrigin(), atol=1e-3)
        np.testing.assert_allclose(fused.GetDirection(), ct.GetDirection(), atol=1e-6)
        written = sitk.GetArrayFromImage(fused).astype(np.float64) / MAX_STORED  # (z, y, x)
        reference = volume[0].numpy().transpose(2, 1, 0)  # (x, y, z) -> (z, y, x)
        assert np.abs(written - reference).max() <= QUANTUM, (window, method)
        assert np.ptp(reference) > 100 * QUANTUM  # spans many grey levels: not a constant any writer would match


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("deploy_phantom")
    make_phantom(root, ct_shape=(64, 64, 16), ct_spacing=(6.0, 6.0, 8.0), seed=0, write_nifti=False)
    return root / "dicom"


@pytest.fixture(scope="module")
def with_nac_pet(tiny_study: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The tiny study plus a non-attenuation-corrected copy of its PET, two slices longer: the SDK's rule (most
    instances) would pick that one, the batch's (attenuation-corrected PET first) the original. Its series UID."""
    study = tmp_path_factory.mktemp("deploy_nac") / "dicom"
    shutil.copytree(tiny_study, study)
    pet = sorted((pydicom.dcmread(path) for path in (study / "PET").iterdir()),
                 key=lambda ds: float(ds.ImagePositionPatient[2]))
    step = float(pet[-1].ImagePositionPatient[2]) - float(pet[-2].ImagePositionPatient[2])
    series_uid = pydicom.uid.generate_uid()
    (study / "NAC").mkdir()
    for index, source in enumerate([*pet, pet[-1], pet[-1]]):
        ds = copy.deepcopy(source)
        beyond = max(0, index - len(pet) + 1)  # the two extra slices continue the stack
        ds.ImagePositionPatient = [*ds.ImagePositionPatient[:2], float(ds.ImagePositionPatient[2]) + beyond * step]
        ds.SeriesInstanceUID, ds.SeriesDescription, ds.CorrectedImage = series_uid, "PET NAC", ["DECY"]
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
        ds.InstanceNumber = index + 1
        ds.save_as(study / "NAC" / f"nac_{index:03d}.dcm")
    return study, series_uid


@pytest.fixture(scope="module")
def random_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the bundle whose checkpoint holds random weights for its network_def: the model path runs."""
    torch.manual_seed(0)
    bundle = tmp_path_factory.mktemp("deploy_model") / "dcif_gan"
    shutil.copytree(CHECKOUT_BUNDLE / "configs", bundle / "configs")
    checkpoint = bundled_checkpoint(bundle)
    checkpoint.parent.mkdir(parents=True)
    torch.save({"model": bundled_network(bundle).state_dict()}, checkpoint)
    return bundle


@pytest.fixture(scope="module")
def torchscript_model(random_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The random bundle's network exported as MONAI's ``ckpt_export`` does."""
    from monai.bundle import ckpt_export

    exported = tmp_path_factory.mktemp("deploy_torchscript") / "model.ts"
    configs = random_bundle / "configs"
    ckpt_export("network_def", filepath=str(exported), ckpt_file=str(bundled_checkpoint(random_bundle)),
                meta_file=str(configs / "metadata.json"), config_file=str(configs / "inference.json"),
                key_in_ckpt="model", bundle_root=str(random_bundle))
    return exported


@pytest.fixture(scope="module")
def phantom_runs(start_app, tiny_study: Path, random_bundle: Path, torchscript_model: Path, planted_export: Path,
                 with_nac_pet: tuple[Path, str],
                 tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, AppRun]]:
    """(output folder, run) of the app on tiny phantoms: with the bundle's checkpoint (``-m`` a folder of bundles, as
    in the image), with its TorchScript export, and with the default model on a study whose tags and names carry
    identifiers and on one with two PET series. Started together: each run is mostly ~12 s of single-threaded SDK
    import."""
    root = tmp_path_factory.mktemp("deploy_runs")
    planted = next(path.parent for path in planted_export.rglob("CT"))
    inputs = {"checkpoint": ("-i", tiny_study, "-m", random_bundle.parent),
              "torchscript": ("-i", tiny_study, "-m", torchscript_model),
              "planted": ("-i", planted),
              "two_pets": ("-i", with_nac_pet[0])}
    started = {name: start_app(root / name / "app_cwd", *args, "-o", root / name / "out")
               for name, args in inputs.items()}
    return {name: (root / name / "out", run) for name, run in wait_all(started).items()}


def test_phantom_study_with_model_gives_bundle_result(phantom_runs, tiny_study, random_bundle, whole_volume_fusion):
    out_dir, run = phantom_runs["checkpoint"]
    assert run.returncode == 0, run
    checkpoint = bundled_checkpoint(random_bundle)
    assert f"fusing with dcif_gan from {checkpoint}" in run.stderr
    expected = whole_volume_fusion({"ct": tiny_study / "CT", "pet": tiny_study / "PET"},
                                   build_fusers(["dcif_gan"], checkpoint=checkpoint,
                                                network=bundled_network(random_bundle)))
    assert_output_matches(out_dir, tiny_study / "CT", expected)


def test_a_torchscript_export_of_the_model_fuses_as_the_bundle_does(phantom_runs, tiny_study, torchscript_model,
                                                                    whole_volume_fusion):
    out_dir, run = phantom_runs["torchscript"]
    assert run.returncode == 0, run
    assert f"fusing with dcif_gan from {torchscript_model}" in run.stderr
    expected = whole_volume_fusion({"ct": tiny_study / "CT", "pet": tiny_study / "PET"},
                                   build_fusers(["dcif_gan"], checkpoint=torchscript_model))
    assert_output_matches(out_dir, tiny_study / "CT", expected)


def test_real_study_through_sdk_environment_variables(run_app, shared_petct, whole_volume_fusion, tmp_path):
    study = shared_petct / REAL_STUDY / "dicom"  # CT, PET and an RTSTRUCT beside each: selection must skip those
    if not study.is_dir():
        pytest.skip(f"real study {REAL_STUDY} not found in {shared_petct}")
    out_dir = tmp_path / "out"
    run = run_app(env={"HOLOSCAN_INPUT_PATH": str(study), "HOLOSCAN_OUTPUT_PATH": str(out_dir)})
    assert run.returncode == 0, run
    # The deploy app packages the model: it fuses with it whenever a checkpoint is there.
    method = MODEL_METHOD if bundled_checkpoint().is_file() else BASELINE_FALLBACK
    if method != MODEL_METHOD:
        assert f"fusing with the {BASELINE_FALLBACK} baseline instead" in run.stderr
    expected = whole_volume_fusion({"ct": study / "CT" / "image", "pet": study / "PET" / "image"},
                                   build_fusers([method]))
    assert_output_matches(out_dir, study / "CT" / "image", expected)


def test_no_identifier_reaches_anything_but_the_dicom_series(phantom_runs, identifiers_in):
    out_dir, run = phantom_runs["planted"]
    assert run.returncode == 0, run
    assert list(out_dir.glob("fused_*.nii.gz"))
    assert identifiers_in(out_dir, run.stderr) == []


def test_the_series_fused_are_those_the_batch_job_picks(phantom_runs, with_nac_pet):
    from pipeline.io.discovery import discover_studies

    out_dir, run = phantom_runs["two_pets"]
    assert run.returncode == 0, run
    study, nac_uid = with_nac_pet
    (pair,) = discover_studies(study).pairs
    assert pair.pet.series_uid != nac_uid  # the batch's choice: the attenuation-corrected PET
    for series in out_dir.glob("dicom_*"):
        header = pydicom.dcmread(series / "fused.dcm", stop_before_pixels=True)
        assert {item.SeriesInstanceUID for item in header.ReferencedSeriesSequence} == {pair.ct.series_uid,
                                                                                      pair.pet.series_uid}
