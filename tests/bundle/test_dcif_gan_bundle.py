"""The bundle as a MONAI user runs it: verify, train, resume, infer (with MLflow), evaluate.

Workflows run in-process through ``monai.bundle.run`` (the function behind ``python -m
monai.bundle run``) on two tiny phantom studies with a tiny network; training under torchrun, a copied
bundle and a missing checkpoint (test_bundle_errors.py) run as the real command line.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from mlflow import MlflowClient
from monai.bundle import ConfigParser, ConfigWorkflow, run, verify_metadata, verify_net_in_out

from pipeline.errors import DcifError
from pipeline.io.dicom import load_series
from pipeline.networks import DCIFGenerator
from pipeline.handlers import read_history

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIGS = REPO_ROOT / "bundles" / "dcif_gan" / "configs"
TINY = {"width": 8, "num_heads": 2, "depths": [2, 2, 2]}
TINY_NET = {f"generator_config#{key}": value for key, value in TINY.items()}
TINY_INFERENCE_NET = {f"network_def#{key}": value for key, value in TINY.items()}


TINY_TRAINING = {"phantom_studies": 2, "val_fraction": 0.5, "epochs": 1, "val_interval": 1, "crop_size": 32,
                 "batch_size": 4, **TINY_NET}


def _bundle(config: str, run_id: str, bundle_root: Path, dataset_dir: Path, **overrides) -> None:
    """Run one workflow as its README line does; evaluate.json is an override layered on inference.json."""
    layers = ["inference.json", config] if config == "evaluate.json" else [config]
    run(run_id, config_file=[str(CONFIGS / layer) for layer in layers], meta_file=str(CONFIGS / "metadata.json"),
        logging_file=str(CONFIGS / "logging.conf"), bundle_root=str(bundle_root), dataset_dir=str(dataset_dir),
        **overrides)


def _cli_overrides(overrides: dict) -> list[str]:
    """``--key value`` pairs as the command line takes them (lists without spaces, for fire)."""
    return [item for key, value in overrides.items() for item in (f"--{key}", str(value).replace(" ", ""))]


def _error_chain(error: BaseException) -> list[str]:
    """Messages of an exception and its causes: MONAI's config runner wraps what our code raised."""
    messages = []
    while error is not None:
        messages.append(str(error))
        error = error.__cause__
    return messages


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_datalist, tiny_phantom_root) -> Path:
    """A bundle root holding models/model.pt after one tiny epoch, tracked in MLflow: a copy of the bundle, its shipped
    model.pt in place, trained for fewer epochs than the default validation interval."""
    root = tmp_path_factory.mktemp("bundle")
    (root / "models").mkdir()
    shutil.copy(CONFIGS.parent / "models" / "model.pt", root / "models" / "model.pt")
    _bundle("train.json", "training", root, tiny_phantom_root, tracking="mlflow",
            **{**TINY_TRAINING, "val_interval": 5})
    return root


def test_the_metadata_names_the_versions_of_the_packages_it_runs_with():
    """It said PyWavelets 1.8.0 beside an installed 1.9.0, and left out the DICOM decoders, isal, scipy and
    highdicom."""
    metadata = json.loads((CONFIGS / "metadata.json").read_text())
    for package, version in {"monai": metadata["monai_version"], "torch": metadata["pytorch_version"],
                             **metadata["required_packages_version"]}.items():
        assert importlib.metadata.version(package).split("+")[0] == version, package


def test_bundle_verifies():
    """Model-zoo's checks, as ``python -m monai.bundle verify_*`` runs them (each raises on a failure)."""
    verify_metadata(meta_file=str(CONFIGS / "metadata.json"), filepath=str(CONFIGS / "schema" / "metadata_schema.json"))
    verify_net_in_out(net_id="network_def", meta_file=str(CONFIGS / "metadata.json"),
                      config_file=str(CONFIGS / "inference.json"))


@pytest.mark.parametrize(("workflow_type", "layers"), [
    ("inference", ["inference.json"]),
    ("inference", ["inference.json", "evaluate.json"]),
    ("train", ["train.json"]),
])
def test_bundle_has_the_standard_properties(workflow_type, layers, tiny_phantom_root, tmp_path):
    workflow = ConfigWorkflow(config_file=[str(CONFIGS / layer) for layer in layers],
                              meta_file=str(CONFIGS / "metadata.json"), workflow_type=workflow_type,
                              bundle_root=str(tmp_path), dataset_dir=str(tiny_phantom_root), phantom_studies=2,
                              val_fraction=0.5, checkpoint=str(CONFIGS.parent / "models" / "model.pt"))
    workflow.initialize()
    assert workflow.check_properties() == []


def test_a_copy_of_the_bundle_runs_from_its_own_folder(tmp_path, tiny_phantom_root):
    """Model-zoo style: ``bundle_root`` is ".", so the folder works wherever it is, with the package installed."""
    bundle = tmp_path / "dcif_gan"
    shutil.copytree(CONFIGS, bundle / "configs")
    command = [sys.executable, "-m", "monai.bundle", "run", "inference", "--config_file", "configs/inference.json",
               "--meta_file", "configs/metadata.json", "--dataset_dir", str(tiny_phantom_root),
               "--method", "laplacian", "--windows", "['lung']"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=bundle, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(list((bundle / "eval").rglob("fused_laplacian_lung.nii.gz"))) == 1


def test_training_saves_a_fuser_ready_checkpoint_and_tracks_the_run(trained):
    """The run's last epoch is validated though shorter than the interval: model.pt is the run's, not the shipped one
    the copied bundle held, and its card says which epoch, at what score, trained how and on what."""
    checkpoint = torch.load(trained / "models" / "model.pt", weights_only=True)
    assert checkpoint.keys() == {"model", "card"}
    card = checkpoint["card"]
    assert card["network"]["width"] == 8 and card["training_studies"] == 1
    history = read_history(trained / "eval" / "train" / "history.json")["epochs"]
    assert card["epoch"] == 1 and card["validation"]["val_selection"] == history[0]["val_selection"]
    assert (card["lr_g"], card["lr_d"], card["crop_size"], card["batch_size"]) == (5e-4, 2.5e-4, 32, 4)
    assert card["training_data"] == "2 phantom studies (generated)"
    assert (trained / "eval" / "train" / "last.pt").is_file()
    client = MlflowClient(tracking_uri=f"sqlite:///{trained / 'eval' / 'mlruns.db'}")
    (experiment,) = [e for e in client.search_experiments() if e.name == "dcif_gan_training"]
    (run_info,) = client.search_runs([experiment.experiment_id])
    for name in ("train_loss", "train_d_loss", "train_g_content1", "val_QABF"):
        assert client.get_metric_history(run_info.info.run_id, name), name
    assert run_info.data.params["variant"] == "network4" and run_info.data.params["alpha"] == "100.0"
    assert run_info.data.params["training_data"] == "2 phantom studies (generated)"
    assert [a.path for a in client.list_artifacts(run_info.info.run_id, "checkpoints")] == ["checkpoints/model.pt"]


def test_a_fixed_seed_repeats_the_run(trained, tmp_path, tiny_datalist, tiny_phantom_root):
    _bundle("train.json", "training", tmp_path, tiny_phantom_root, **TINY_TRAINING)
    first = torch.load(trained / "models" / "model.pt", weights_only=True)["model"]
    again = torch.load(tmp_path / "models" / "model.pt", weights_only=True)["model"]
    assert first.keys() == again.keys()
    assert all(torch.equal(first[name], again[name]) for name in first)


@pytest.mark.parametrize("case", ["missing datalist", "study without PET", "checkpoint of another architecture"])
def test_bad_input_to_the_workflows_is_one_clear_line(case, trained, tmp_path, tiny_datalist, tiny_phantom_root):
    overrides: dict = {"output_dir": str(tmp_path / "out"), **TINY_INFERENCE_NET}
    if case == "missing datalist":
        overrides["input"], expected = str(tmp_path / "absent.json"), "absent.json: no such file or folder"
    elif case == "study without PET":
        shutil.copytree(tiny_phantom_root / "seed_000" / "dicom" / "CT", tmp_path / "ct_only" / "CT")
        overrides["input"], expected = str(tmp_path / "ct_only"), "no fusable PET/CT study found"
    else:
        overrides.update({"input": str(tiny_phantom_root / "seed_000"), "network_def#width": 16,
                          "checkpoint": str(tmp_path / "other.pt")})
        other = DCIFGenerator(variant="network2", width=8, num_heads=2, depths=(2, 2, 2))
        torch.save({"model": other.state_dict()}, tmp_path / "other.pt")
        expected = "does not match DCIFGenerator"
    with pytest.raises(Exception) as error:
        _bundle("inference.json", "inference", trained, tiny_phantom_root, **overrides)
    ours = [text for text in _error_chain(error.value) if expected in text]
    assert ours and "\n" not in ours[0], _error_chain(error.value)


def test_training_resumes_with_its_rates_and_the_best_model_its_score_describes(trained, tmp_path, tiny_phantom_root):
    """Resumed with new rates, from a state whose best score (0.99) was scored in another model_dir, into its own train
    folder: the optimizers step at the configured rates, as the history records; the best score is model.pt's (kept,
    0.99 froze model.pt at epoch 2 through every later resume); and the folder keeps one epoch state, as an
    uninterrupted run would (the earlier session's stayed)."""
    train_dir = tmp_path / "eval" / "train"
    shutil.copytree(trained / "eval" / "train", train_dir)
    state = torch.load(train_dir / "last.pt", weights_only=False)
    torch.save({**state, "best": {"best_metric": 0.99, "best_metric_epoch": 1}}, train_dir / "last.pt")
    _bundle("train.json", "training", tmp_path, tiny_phantom_root, **{**TINY_TRAINING, "epochs": 2},
            resume_from=str(train_dir / "last.pt"), lr_g=1e-4, lr_d=5e-5)
    last = torch.load(train_dir / "last.pt", weights_only=False)
    assert last["trainer"]["iteration"] == 2 * last["trainer"]["epoch_length"]  # epoch 1 loaded, one more run
    card = torch.load(tmp_path / "models" / "model.pt", weights_only=True)["card"]
    assert (card["epoch"], card["validation"]["val_selection"]) == (2, last["best"]["best_metric"])
    assert last["best"]["best_metric_epoch"] == 2
    assert [last[name]["param_groups"][0]["lr"] for name in ("g_optimizer", "d_optimizer")] == [1e-4, 5e-5]
    params = read_history(train_dir / "history.json")["params"]
    assert (params["lr_g"], params["lr_d"]) == (1e-4, 5e-5)
    assert [path.name for path in train_dir.glob("checkpoint_epoch=*.pt")] == ["checkpoint_epoch=2.pt"]


def test_inference_writes_fused_volumes_on_the_ct_grid_and_logs_slices(trained, tiny_datalist, tiny_phantom_root,
                                                                        tiny_geometry):
    phantoms = tiny_phantom_root
    out = trained / "inference"
    _bundle("inference.json", "inference", trained, phantoms, output_dir=str(out), input=str(phantoms / "seed_000"),
            tracking="mlflow", every_k=4, save_streams=True, **TINY_INFERENCE_NET)
    key = tiny_datalist[0]["study_key"]
    ct = load_series(tiny_datalist[0]["ct"])
    for method in ("dcif_gan", "dcif_gan_f_ct", "dcif_gan_f_pet"):
        for window in ("lung", "mediastinal"):
            image = nib.load(out / key / f"fused_{method}_{window}.nii.gz")
            assert image.shape == tuple(ct.shape[1:]) == tiny_geometry["size"]
            assert np.allclose(image.affine, ct.affine.numpy(), atol=1e-4)  # the CT's geometry
            data = image.get_fdata()
            assert 0.0 <= data.min() and data.max() <= 1.0
    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlruns.db'}")
    (experiment,) = [e for e in client.search_experiments() if e.name == "dcif_gan_inference"]
    (run_info,) = client.search_runs([experiment.experiment_id])
    slices = client.list_artifacts(run_info.info.run_id, f"slices/study000_{key}/lung/dcif_gan")
    assert slices and all(a.path.endswith(".png") for a in slices)
    assert client.get_metric_history(run_info.info.run_id, "QABF.lung.dcif_gan.study000.slices")
    assert client.list_artifacts(run_info.info.run_id, f"volumes/{key}")
    logged = " ".join([run_info.info.run_name, *run_info.data.tags.values(), *run_info.data.params.values()])
    assert "PHANTOM" not in logged.upper()  # no patient name or ID reaches MLflow


def test_inference_without_checkpoint_names_the_baselines(tmp_path, tiny_datalist, tiny_phantom_root):
    phantoms = tiny_phantom_root
    with pytest.raises(Exception) as error:
        _bundle("inference.json", "inference", tmp_path, phantoms, output_dir=str(tmp_path / "out"))
    chain = _error_chain(error.value)
    assert any("no dcif_gan checkpoint found" in text and "--method laplacian" in text for text in chain)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("*.nii.gz"))


def test_inference_with_a_baseline_needs_no_checkpoint(tmp_path, tiny_datalist, tiny_phantom_root):
    phantoms = tiny_phantom_root
    _bundle("inference.json", "inference", tmp_path, phantoms, output_dir=str(tmp_path / "out"), method="laplacian",
            windows=["lung"])
    assert len(list((tmp_path / "out").rglob("fused_laplacian_lung.nii.gz"))) == 1


def test_evaluation_tables_every_method_per_window(trained, tiny_datalist, tiny_phantom_root):
    phantoms = tiny_phantom_root
    out = trained / "evaluation"
    _bundle("evaluate.json", "evaluate", trained, phantoms, output_dir=str(out), phantom_studies=2, val_fraction=0.5,
            **TINY_INFERENCE_NET)
    summary = (out / "metrics_summary.md").read_text()
    methods = ("dcif_gan", "average", "max", "laplacian", "dwt", "saliency")
    lines = summary.splitlines()
    for method in methods:
        assert sum(line.startswith(f"| {method} |") and "±" in line for line in lines) == 2  # a row per window
    assert summary.count("| method | " + " | ".join(methods) + " |") == 2  # the metrics-won table per window
    assert "CT window: lung" in summary and "CT window: mediastinal" in summary
    assert summary.count("**") >= 2 * 8 * 2  # a best value marked in every column of both tables
    assert (out / "metrics_per_slice.csv").stat().st_size > 0
    lesion = json.loads((out / "lesion_contrast.json").read_text())
    ratios = {(row["window"], row["method"]): row["mean_ratio"] for row in lesion["summary"]}
    assert len(ratios) == 2 * len(methods) and all(r > 0 for r in ratios.values())  # the tumour stays visible
    assert len(list((out / "lesion_panels").glob("*_lung.png"))) == len({row["study_key"] for row in lesion["rows"]})
    assert "| lung | max |" in (out / "lesion_contrast.md").read_text()
    # Both reports name the SUV ceiling the bundle scaled the PET at, and the summary which slices it scored.
    assert f"PET SUV ceiling {lesion['suv_max']:g}, one body slice in 2 scored" in summary


def test_training_on_a_study_cache_keeps_a_history_and_a_dated_card(tmp_path, tiny_study_cache, tiny_phantom_root):
    _bundle("train.json", "training", tmp_path, tiny_phantom_root, study_cache=str(tiny_study_cache),
            detail_weight=1.0, detail_target_args={"radius": 4},
            detail_window_target_args={"mediastinal": {"high": 0.3}},
            training_data="two tiny phantoms", **TINY_TRAINING)
    (epoch,) = read_history(tmp_path / "eval" / "train" / "history.json")["epochs"]
    assert epoch["g_detail"] > 0 and epoch["iterations"] > 0 and "val_QABF" in epoch
    # the key metric is the mean of two reported metrics, computed from their results
    assert epoch["val_selection"] == pytest.approx((epoch["val_QABF"] + epoch["val_lesion_ratio"]) / 2)
    card = torch.load(tmp_path / "models" / "model.pt", weights_only=True)["card"]
    assert card["detail_weight"] == 1.0 and card["training_data"] == "two tiny phantoms"
    assert card["detail_target_args"] == {"radius": 4}
    assert card["detail_window_target_args"] == {"mediastinal": {"high": 0.3}}
    assert (card["training_studies"], card["validation_studies"]) == (1, 1) and len(card["created"]) == 10


def test_training_stopped_by_an_error_is_marked_failed_in_mlflow(tmp_path, tiny_study_cache, tiny_phantom_root,
                                                                 monkeypatch):
    """The trainer's StatsHandler raises an error it is handed, and ignite then calls no later handler: the MLflow
    logger comes first, or a training run that stopped on an error stays "running" in MLflow."""
    from pipeline.handlers import TrainingHistory

    def _disk_full(self, engine):
        raise OSError("disk full")

    monkeypatch.setattr(TrainingHistory, "_close_epoch", _disk_full)
    with pytest.raises(RuntimeError) as raised:
        _bundle("train.json", "training", tmp_path, tiny_phantom_root, study_cache=str(tiny_study_cache),
                tracking="mlflow", **TINY_TRAINING)
    assert "disk full" in " ".join(_error_chain(raised.value))
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'eval' / 'mlruns.db'}")
    (stopped,) = client.search_runs([client.get_experiment_by_name("dcif_gan_training").experiment_id])
    assert stopped.info.status == "FAILED" and stopped.info.run_name.startswith("training_")
    assert client.get_metric_history(stopped.info.run_id, "train_d_loss")  # it ran, and logged, until it stopped


def test_a_time_limit_ends_training_at_the_end_of_an_epoch(tmp_path, tiny_study_cache, tiny_phantom_root):
    """Before its epochs, and never within one: last.pt resumes exactly where an uninterrupted run would be, and the
    last epoch is validated (model selection sees it) whatever the interval. The limit is any number of seconds."""
    _bundle("train.json", "training", tmp_path, tiny_phantom_root, study_cache=str(tiny_study_cache),
            **{**TINY_TRAINING, "epochs": 1000, "val_interval": 1000}, time_limit_s=0.5)
    trainer = torch.load(tmp_path / "eval" / "train" / "last.pt", weights_only=False)["trainer"]
    assert 0 < trainer["iteration"] < 1000 * trainer["epoch_length"]
    assert trainer["iteration"] % trainer["epoch_length"] == 0
    card = torch.load(tmp_path / "models" / "model.pt", weights_only=True)["card"]
    assert card["epoch"] == trainer["iteration"] // trainer["epoch_length"]
    assert card["training_data"] == "2 studies from a study cache (2 phantom)"


def test_training_data_says_what_the_studies_were(tmp_path, tiny_phantom_root, tiny_study_cache):
    """The card and MLflow said "phantom studies" whatever training read; never a path (folders name patients)."""
    def training_data(**overrides) -> str:
        parser = ConfigParser()
        parser.read_config(str(CONFIGS / "train.json"))
        parser.update({"bundle_root": str(tmp_path), "dataset_dir": str(tiny_phantom_root), "phantom_studies": 2,
                       **overrides})
        return parser.get_parsed_content("training_data")

    assert training_data() == "2 phantom studies (generated)"
    assert training_data(study_cache=str(tiny_study_cache)) == "2 studies from a study cache (2 phantom)"
    assert training_data(input=str(tiny_phantom_root)) == "2 studies from an input folder"
    assert training_data(input=str(tiny_phantom_root), training_data="two tiny phantoms") == "two tiny phantoms"


def test_evaluation_holds_out_the_studies_its_checkpoint_held_out(tmp_path, tiny_phantom_root):
    """evaluate.json drew its own split with its own seed: a model trained with --seed 1 was scored on a study it had
    trained on. It now draws the split the checkpoint's card records."""
    checkpoint = tmp_path / "model.pt"
    torch.save({"model": {}, "card": {"seed": 1, "val_fraction": 0.5, "phantom_studies": 2}}, checkpoint)

    def split(layers: list[str], **overrides) -> dict[str, list[int]]:
        parser = ConfigParser()
        parser.read_config([str(CONFIGS / layer) for layer in layers])
        parser.update({"bundle_root": str(tmp_path), "dataset_dir": str(tiny_phantom_root), **overrides})
        return {part: [item["study_index"] for item in items] for part, items in parser.get_parsed_content("split").items()}

    trained = split(["train.json"], seed=1, phantom_studies=2, val_fraction=0.5)
    assert split(["inference.json", "evaluate.json"], checkpoint=str(checkpoint)) == trained
    assert trained != split(["train.json"], phantom_studies=2, val_fraction=0.5)  # seed 0 holds out the other


def test_evaluation_reads_a_study_cache(trained, tmp_path, tiny_study_cache, tiny_phantom_root):
    _bundle("evaluate.json", "evaluate", trained, tiny_phantom_root, study_cache=str(tiny_study_cache),
            output_dir=str(tmp_path), methods=["average", "max"])
    rows = (tmp_path / "metrics_per_study.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 * 2  # the one validation study, two windows, two methods
    assert (tmp_path / "lesion_contrast.md").is_file()


def test_multi_gpu_config_trains_under_torchrun(tmp_path, tiny_geometry):
    """torchrun with two CPU processes (gloo stands in for NCCL): DDP players, rank-0 checkpoints, a time limit
    whose decision is all-reduced each epoch, and each rank validating one of the two validation studies, whose
    gathered scores are the ones one process gives the saved model."""
    from pipeline.data import phantom_datalist

    phantoms = tmp_path / "phantoms"
    phantom_datalist(phantoms, n_studies=4, **tiny_geometry)
    training = {**TINY_TRAINING, "phantom_studies": 4}  # two held out for validation
    configs = f"['{CONFIGS / 'train.json'}','{CONFIGS / 'multi_gpu_train.json'}']"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "monai.bundle", "run", "training",
        "--config_file", configs, "--meta_file", str(CONFIGS / "metadata.json"), "--bundle_root", str(tmp_path),
        "--dataset_dir", str(phantoms), *_cli_overrides({**training, "time_limit_s": 3600}),
    ]
    # faulthandler: a rank that aborts in C++ ("terminate called ...", about one full suite in four, not reproduced
    # alone) then prints every thread's Python stack, and the ranks' log lines (stdout) say how far each got.
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, timeout=600,
                            env={**os.environ, "PYTHONFAULTHANDLER": "1"})
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    assert torch.load(tmp_path / "eval" / "train" / "last.pt", weights_only=False)["trainer"]["iteration"] > 0
    saved = torch.load(tmp_path / "models" / "model.pt", weights_only=True)
    assert saved["card"]["validation_studies"] == 2

    one_process = ConfigWorkflow(config_file=str(CONFIGS / "train.json"), meta_file=str(CONFIGS / "metadata.json"),
                                 workflow_type="train", bundle_root=str(tmp_path / "one"), dataset_dir=str(phantoms),
                                 **training)
    one_process.initialize()
    one_process.parser.get_parsed_content("network").generator.load_state_dict(saved["model"])
    validator = one_process.parser.get_parsed_content("validate#evaluator")
    validator.run(1)
    assert validator.state.metrics == pytest.approx(saved["card"]["validation"], rel=1e-6)


def test_inference_tracked_in_mlflow_logs_no_identifier(trained, tmp_path, planted_export, tiny_phantom_root,
                                                       identifiers_in, capfd):
    """A hospital export (identifiers in headers, folder and file names) through the bundle, tracked in MLflow."""
    out = tmp_path / "out"
    _bundle("inference.json", "inference", trained, tiny_phantom_root, output_dir=str(out), input=str(planted_export),
            tracking="mlflow", every_k=4, **TINY_INFERENCE_NET)
    assert list(out.rglob("fused_dcif_gan_lung.nii.gz")) and (out / "mlruns.db").is_file()
    terminal = capfd.readouterr()
    assert identifiers_in(out, terminal.out, terminal.err) == []  # the run database, artifacts, volumes, logs


def test_validation_scores_the_body_slices_the_reports_score(tmp_path):
    """The checkpoint is picked on the slices inside the body, as every report scores, not on air slices."""
    from monai.bundle import ConfigParser

    from pipeline.data import phantom_datalist

    # A PET shorter than the CT: the CT slices it misses are outside the fusable body.
    (study,) = phantom_datalist(tmp_path, n_studies=1, size=(32, 32, 16), spacing=(12.0, 12.0, 8.0),
                                pet_shape=(24, 24, 10), pet_spacing=(16.0, 16.0, 8.0))
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    whole = parser.get_parsed_content("preprocessing")(study)
    validated = parser.get_parsed_content("validate#preprocessing")(study)
    body = torch.nonzero(whole["body_slices"]).flatten()
    assert 0 < len(body) < whole["image"].shape[-1]  # the phantom has slices outside the body
    assert torch.equal(validated["image"].as_tensor(), whole["image"].as_tensor()[..., body])


def test_training_steps_with_fused_adam():
    """One kernel per optimiser step: the default Adam's dozen ops per parameter took 2-3 % of a CPU training step."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    for name in ("g_optimizer", "d_optimizer"):
        optimizer = parser.get_parsed_content(name)
        assert isinstance(optimizer, torch.optim.Adam) and optimizer.defaults["fused"], name


def test_inference_leaves_ct_slices_without_pet_blank(tmp_path, tiny_phantom_root, whole_volume_fusion):
    """As every other door writes them: a CT slice outside the PET's axial extent is blank, not CT alone."""
    from pipeline.data import phantom_datalist
    from pipeline.fusion.selection import build_fusers

    (study,) = phantom_datalist(tmp_path / "short", n_studies=1, size=(32, 32, 16), spacing=(12.0, 12.0, 8.0),
                                pet_shape=(24, 24, 10), pet_spacing=(16.0, 16.0, 8.0))
    out = tmp_path / "out"
    _bundle("inference.json", "inference", tmp_path, tiny_phantom_root, output_dir=str(out),
            input=str(tmp_path / "short" / "seed_000"), method="laplacian", windows=["lung"])
    fused = nib.load(out / study["study_key"] / "fused_laplacian_lung.nii.gz").get_fdata()
    blank = fused.reshape(-1, fused.shape[-1]).max(axis=0) == 0
    assert 0 < blank.sum() < blank.size  # the PET (80 mm) covers part of the CT (128 mm)
    (expected,) = whole_volume_fusion(study, build_fusers(["laplacian"]), ["lung"]).values()
    assert np.allclose(fused, expected[0].numpy(), atol=1e-6)


def test_multi_gpu_config_keeps_the_writing_handlers_on_rank_zero():
    """Its overrides name the trainer's handlers by position: they must stay those that log and write files."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.json"), str(CONFIGS / "multi_gpu_train.json")])
    handlers = parser["train"]["handlers"]
    rank_zero = {handler["_target_"] for handler in handlers if handler.get("_disabled_") == "$not @is_rank0"}
    assert rank_zero == {"StatsHandler", "pipeline.handlers.MLflowTrainingLogger", "pipeline.handlers.TrainingHistory"}
    validation = parser["validate"]["handlers"]
    assert [handler["_target_"] for handler in validation
            if isinstance(handler, dict) and handler.get("_disabled_") == "$not @is_rank0"] == [
        "StatsHandler"]  # the validation's log; the best-model saver writes on rank 0 alone (ignite's DiskSaver)


def test_training_and_inference_build_the_same_network():
    """Model-zoo bundles define the network in both workflows' configs: they must not drift apart."""
    train = json.loads((CONFIGS / "train.json").read_text())["generator_config"]
    inference = json.loads((CONFIGS / "inference.json").read_text())["network_def"]
    assert inference.pop("_target_") == "pipeline.networks.DCIFGenerator" and train == inference


@pytest.mark.parametrize("configs", [["train.json"], ["train.json", "multi_gpu_train.json"], ["inference.json"],
                                     ["inference.json", "evaluate.json"]])
def test_every_workflow_checks_its_output_folder_and_device_before_it_starts(configs, tmp_path):
    """multi_gpu_train.json replaces train.json's initialize: it must keep the preflight (here run on a file)."""
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / name) for name in configs])
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    parser["output_dir"], parser["device"] = str(blocker), "$torch.device('cpu')"
    checks = [step for step in parser["initialize"] if "preflight" in step]
    assert len(checks) == 1
    # Its device is the rank's GPU, which needs the process group: the check comes after the group is made.
    groups = [i for i, step in enumerate(parser["initialize"]) if "init_process_group" in step]
    assert all(i < parser["initialize"].index(checks[0]) for i in groups)
    with pytest.raises(RuntimeError) as raised:  # MONAI wraps what an expression raises
        parser.get_parsed_content("initialize#" + str(parser["initialize"].index(checks[0])))
    assert isinstance(raised.value.__cause__, DcifError) and "a_file: cannot use as output folder" in str(
        raised.value.__cause__)
