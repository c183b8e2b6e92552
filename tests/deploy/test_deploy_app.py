"""The deploy app end to end: its fused DICOM series lie on the CT and equal the bundle's inference.

The reference is the bundle's way of fusing (the whole study preprocessed at once, same
FusionNetwork, same slice inferer): the app streams slabs, and its series must reproduce that
within 12-bit quantisation.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import torch

from pipeline.batch.layout import LOCATION_KEY_FILE
from pipeline.bundle_model import BUNDLE_ENV, CHECKOUT_BUNDLE, bundled_checkpoint, bundled_network
from pipeline.fusion.selection import BASELINE_FALLBACK, MODEL_METHOD, build_fusers
from pipeline.fusion.streaming import fused_filename
from pipeline.io.atomic import temporary_sibling
from tests.io.conftest import left_by_a_killed_run
from pipeline.io.derived_series import FUSED_FILE, MAX_STORED, colour_folder_name, dicom_folder_name
from pipeline.phantom import make_phantom

from .conftest import REPO_ROOT, AppRun, wait_all

QUANTUM = 0.5 / MAX_STORED + 1e-6  # the writer rounds fused * 4095 to an integer
REAL_STUDY = "STS_025"  # the smallest real study: 47 slices
KILLED_METHOD = "average"  # the method of a killed earlier run's leftovers: never one the app fuses with
# Run in the app's process before it starts: the DICOM writer fails at its first slab, naming a file of the input.
INJECTED_FAILURE = """
import sys
import pipeline.fusion.writers

def fail(sink, slab):
    raise RuntimeError(f"injected failure reading {sys.argv[sys.argv.index('-i') + 1]}/CT/slice.dcm")

pipeline.fusion.writers.DicomSink.add = fail
"""


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
def anisotropic_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny study whose CT pixels are 4 mm wide and 7 mm high, 64 columns by 48 rows: a reader that swaps the two
    in-plane spacings, or the axes, puts it elsewhere."""
    root = tmp_path_factory.mktemp("deploy_anisotropic")
    make_phantom(root, ct_shape=(64, 48, 16), ct_spacing=(4.0, 7.0, 8.0), seed=1, write_nifti=False)
    return root / "dicom"


@pytest.fixture(scope="module")
def described_export(planted_export: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The planted export, its study and series descriptions naming the patient too, as real exports' often do."""
    export = tmp_path_factory.mktemp("deploy_described") / "export"
    shutil.copytree(planted_export, export)
    for path in export.rglob("*.dcm"):
        ds = pydicom.dcmread(path)
        ds.StudyDescription = f"PET/CT {ds.PatientName}"
        ds.SeriesDescription = f"{ds.Modality} {ds.PatientID}"
        ds.save_as(path)
    return export


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
def loose_checkpoint(random_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The random bundle's weights as a checkpoint file on their own, as a user mounts one."""
    path = tmp_path_factory.mktemp("deploy_loose") / "model.pt"
    shutil.copyfile(bundled_checkpoint(random_bundle), path)
    return path


@pytest.fixture(scope="module")
def packaged_configs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder laid out as the MAP packager lays it out, its bundle without weights."""
    models = tmp_path_factory.mktemp("deploy_packaged") / "models"
    shutil.copytree(CHECKOUT_BUNDLE / "configs", models / "dcif_gan" / "configs")
    return models


def _leave_killed_run(out_dir: Path) -> None:
    """What a run killed while writing leaves in ``out_dir``: its temporary files, beside and in series folders."""
    for path in (out_dir / fused_filename("lung", KILLED_METHOD),
                 out_dir / dicom_folder_name(KILLED_METHOD, "lung") / FUSED_FILE,
                 out_dir / colour_folder_name(KILLED_METHOD, "lung") / FUSED_FILE):
        path.parent.mkdir(parents=True, exist_ok=True)
        left_by_a_killed_run(temporary_sibling(path))


@pytest.fixture(scope="module")
def phantom_runs(start_app, tiny_study: Path, anisotropic_study: Path, random_bundle: Path, torchscript_model: Path,
                 loose_checkpoint: Path, packaged_configs: Path, described_export: Path,
                 with_nac_pet: tuple[Path, str],
                 tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, AppRun]]:
    """(output folder, run) of the app on tiny phantoms: with the bundle's checkpoint (``-m`` a folder of bundles, as
    in the image), with its TorchScript export, with a checkpoint file and the bundle only in the models folder, or
    nowhere; with the default model on a study whose tags, descriptions and names carry identifiers, on one with two
    PET series (into an output folder a killed run left temporaries in), on one with anisotropic CT pixels; and with a
    failure injected, without and with ``DCIF_TRACEBACK``. Started together: each run is mostly ~12 s of
    single-threaded SDK import."""
    root = tmp_path_factory.mktemp("deploy_runs")
    planted = next(path.parent for path in described_export.rglob("CT"))
    nowhere = {BUNDLE_ENV: str(root / "no_bundle_here")}
    runs = {"checkpoint": (("-i", tiny_study, "-m", random_bundle.parent), {}, ""),
            "torchscript": (("-i", tiny_study, "-m", torchscript_model), {}, ""),
            "packaged": (("-i", tiny_study, "-m", loose_checkpoint),
                         {**nowhere, "HOLOSCAN_MODEL_PATH": str(packaged_configs)}, ""),
            "no_bundle": (("-i", tiny_study, "-m", loose_checkpoint), nowhere, ""),
            "planted": (("-i", planted), {}, ""),
            "two_pets": (("-i", with_nac_pet[0]), {}, ""),
            "anisotropic": (("-i", anisotropic_study), {}, ""),
            "injected": (("-i", tiny_study), {}, INJECTED_FAILURE),
            "injected_traceback": (("-i", tiny_study), {"DCIF_TRACEBACK": "1"}, INJECTED_FAILURE)}
    _leave_killed_run(root / "two_pets" / "out")
    started = {name: start_app(root / name / "app_cwd", *args, "-o", root / name / "out", env=env, preamble=preamble)
               for name, (args, env, preamble) in runs.items()}
    return {name: (root / name / "out", run) for name, run in wait_all(started).items()}


def _default_method() -> str:
    """What the app fuses with by default: the model whenever the bundle's checkpoint is there."""
    return MODEL_METHOD if bundled_checkpoint().is_file() else BASELINE_FALLBACK


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


def test_a_checkpoint_file_is_loaded_into_the_bundle_packaged_with_the_app(phantom_runs, tiny_study, random_bundle,
                                                                           loose_checkpoint, whole_volume_fusion):
    """As in the image with ``-m /models/model.pt``: no bundle beside the file, the shipped one in the models folder."""
    out_dir, run = phantom_runs["packaged"]
    assert run.returncode == 0, run
    assert f"fusing with dcif_gan from {loose_checkpoint}" in run.stderr
    expected = whole_volume_fusion({"ct": tiny_study / "CT", "pet": tiny_study / "PET"},
                                   build_fusers(["dcif_gan"], checkpoint=loose_checkpoint,
                                                network=bundled_network(random_bundle)))
    assert_output_matches(out_dir, tiny_study / "CT", expected)


def test_a_checkpoint_file_without_a_bundle_fails_instead_of_fusing_a_baseline(phantom_runs, loose_checkpoint):
    out_dir, run = phantom_runs["no_bundle"]
    assert run.returncode == 1, run
    assert run.last_line.startswith(f"dcif-deploy: error: {loose_checkpoint}: no DCIF-GAN bundle to load it into"), run
    assert not list(out_dir.glob("fused_*")) and not list(out_dir.glob("dicom_*"))


def test_anisotropic_ct_pixels_fuse_on_the_ct_grid(phantom_runs, anisotropic_study, whole_volume_fusion):
    out_dir, run = phantom_runs["anisotropic"]
    assert run.returncode == 0, run
    expected = whole_volume_fusion({"ct": anisotropic_study / "CT", "pet": anisotropic_study / "PET"},
                                   build_fusers([_default_method()]))
    assert_output_matches(out_dir, anisotropic_study / "CT", expected)


# Run in the deploy venv on the anisotropic study (argv[1]): which CT volumes the grid check refuses against the
# headers the SDK read, and how many instances the SDK's loader kept pixels of. JSON on stdout.
SDK_CHECKS = """
import copy, json, sys
from pathlib import Path
from monai.deploy.core import Fragment
from pipeline.deploy.operators import HeaderOnlyLoaderOperator, check_same_grid, native_datasets
from pipeline.errors import DcifError
from pipeline.io.dicom import read_series
from pipeline.io.headers import read_dicom

study = Path(sys.argv[1])
ct, _ = read_series(study / "CT")
headers = [read_dicom(path) for path in sorted((study / "CT").iterdir())]


def refused(edited):
    try:
        check_same_grid(ct, edited)
    except DcifError:
        return True
    return False


def edited(keyword, edit):
    copies = copy.deepcopy(headers)
    for header in copies:
        setattr(header, keyword, edit(getattr(header, keyword)))
    return copies


loader = HeaderOnlyLoaderOperator(Fragment(), input_folder=study, name="dicom_loader")
instances = [dataset for found in loader.load_data_to_studies(study) for series in found.get_all_series()
             for dataset in native_datasets(series)]
print(json.dumps({
    "refused": {"same": refused(headers), "swapped spacing": refused(edited("PixelSpacing", lambda value: value[::-1])),
                "shifted": refused(edited("ImagePositionPatient", lambda value: [float(v) + 1.0 for v in value])),
                "a slice more": refused(headers[1:])},
    "instances": len(instances), "with pixels": sum("PixelData" in dataset for dataset in instances)}))
"""


@pytest.fixture(scope="module")
def sdk_checks(deploy_python: Path, anisotropic_study: Path) -> dict:
    """:data:`SDK_CHECKS`' findings (one interpreter: the SDK takes ~10 s to import)."""
    done = subprocess.run([str(deploy_python), "-c", SDK_CHECKS, str(anisotropic_study)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_grid_check_refuses_a_ct_off_the_sdk_headers(sdk_checks):
    """The check that replaced the SDK's CT volume: the headers the SDK read agree with the CT volume, and a volume
    whose pixel spacings are swapped, whose origin moved, or which has one slice more than they is refused."""
    assert sdk_checks["refused"] == {"same": False, "swapped spacing": True, "shifted": True, "a slice more": True}


def test_the_sdk_loader_keeps_no_pixels(sdk_checks):
    """The fusion reads the files itself: the SDK's copies of their pixels only raised the peak memory."""
    assert sdk_checks["instances"] > 0 and sdk_checks["with pixels"] == 0


def test_real_study_through_sdk_environment_variables(run_app, shared_petct, whole_volume_fusion, tmp_path):
    study = shared_petct / REAL_STUDY / "dicom"  # CT, PET and an RTSTRUCT beside each: selection must skip those
    if not study.is_dir():
        pytest.skip(f"real study {REAL_STUDY} not found in {shared_petct}")
    out_dir = tmp_path / "out"
    run = run_app(env={"HOLOSCAN_INPUT_PATH": str(study), "HOLOSCAN_OUTPUT_PATH": str(out_dir)})
    assert run.returncode == 0, run
    # The deploy app packages the model: it fuses with it whenever a checkpoint is there.
    method = _default_method()
    if method != MODEL_METHOD:
        assert f"fusing with the {BASELINE_FALLBACK} baseline instead" in run.stderr
    expected = whole_volume_fusion({"ct": study / "CT" / "image", "pet": study / "PET" / "image"},
                                   build_fusers([method]))
    assert_output_matches(out_dir, study / "CT" / "image", expected)


def test_no_identifier_reaches_anything_but_the_dicom_series(phantom_runs, described_export, identifiers_in):
    """Nor the log, where the SDK's series selector printed each series' description and the UIDs."""
    out_dir, run = phantom_runs["planted"]
    assert run.returncode == 0, run
    assert list(out_dir.glob("fused_*.nii.gz"))
    assert identifiers_in(out_dir, run.stderr) == []
    header = pydicom.dcmread(next(described_export.rglob("*.dcm")), stop_before_pixels=True)
    assert header.StudyInstanceUID not in run.stderr and header.SeriesInstanceUID not in run.stderr


def test_an_unexpected_error_ends_in_one_line_naming_the_step(phantom_runs, tiny_study):
    """And leaves nothing in the output folder: no series folder, no temporary file."""
    out_dir, run = phantom_runs["injected"]
    assert run.returncode == 1, run
    assert run.last_line.startswith("dcif-deploy: error: fused_dicom_writer failed: RuntimeError: injected failure "
                                    "reading #"), run  # the input's file as the batch report names it
    assert "Traceback" not in run.stderr and str(tiny_study) not in run.stderr
    assert [path.name for path in out_dir.iterdir()] == [LOCATION_KEY_FILE]


def test_dcif_traceback_shows_where_an_unexpected_error_came_from(phantom_runs):
    out_dir, run = phantom_runs["injected_traceback"]
    assert run.returncode == 1, run
    assert "Traceback (most recent call last)" in run.stderr and ", in fail" in run.stderr, run
    assert [path.name for path in out_dir.iterdir()] == [LOCATION_KEY_FILE]


def test_a_run_first_clears_what_a_killed_run_left(phantom_runs):
    out_dir, run = phantom_runs["two_pets"]
    assert run.returncode == 0, run
    assert [path for path in out_dir.rglob("*") if ".partial." in path.name] == []
    assert not list(out_dir.glob(f"*_{KILLED_METHOD}_*"))  # its series folders, left empty
    assert list(out_dir.glob(f"dicom_{_default_method()}_*"))


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
