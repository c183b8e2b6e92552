"""MLflow loggers write into the run MONAI's handler opened, and do nothing without one."""

from __future__ import annotations

import json

from pathlib import Path

import numpy as np
import pytest
from ignite.engine import Engine, Events
from mlflow import MlflowClient
from monai.handlers import MLFlowHandler

from pipeline.handlers import FusedVolumeWriter, MLflowSliceLogger, MLflowTrainingLogger, find_mlflow_run

REPO_ROOT = Path(__file__).resolve().parents[2]


def _engine(output) -> Engine:
    return Engine(lambda engine, batch: output)


def _slice_item(index: int) -> dict:
    ramp = np.linspace(0, 1, 16 * 16, dtype=np.float32).reshape(16, 16)
    return {"study_index": 0, "study_key": "abc123", "window": "lung", "method": "max", "slice_index": index,
            "ct": ramp, "pet": ramp.T, "fused": np.maximum(ramp, ramp.T), "affine": np.diag([-1.0, -1.0, 2.0, 1.0]),
            "metrics": {"QABF": 0.5, "PSNR": float("inf")}}


def test_without_mlflow_nothing_is_logged_and_no_store_is_made(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    engine = _engine([{"loss": 1.0}])
    MLflowTrainingLogger({"alpha": 1}).attach(engine)
    MLflowSliceLogger().attach(engine)
    engine.run([0, 1], max_epochs=1)
    assert find_mlflow_run(engine) is None
    assert not list(tmp_path.iterdir())


def test_loggers_write_into_monais_run(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    engine = _engine([{"loss": 2.0, "d_loss": 0.5, "pred": None}])
    MLflowTrainingLogger({"alpha": 100.0, "variant": "network4"}).attach(engine)
    MLflowSliceLogger(log_volumes=False).attach(engine)
    MLFlowHandler(tracking_uri=uri, experiment_name="t", iteration_log=False, epoch_log=False,
                  artifact_location=str(tmp_path / "artifacts")).attach(engine)

    @engine.on(Events.ITERATION_COMPLETED(once=1))
    def _slices(e):
        e.state.fusion_slices = [_slice_item(3)]

    engine.run([0, 1], max_epochs=1)
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("t").experiment_id])
    assert run.data.params["variant"] == "network4"
    assert [m.value for m in client.get_metric_history(run.info.run_id, "train_d_loss")] == [0.5, 0.5]
    (qabf,) = client.get_metric_history(run.info.run_id, "QABF.lung.max.study000.slices")
    assert qabf.step == 3 and qabf.value == 0.5
    assert run.data.metrics["QABF.lung.max.study000"] == 0.5  # the study's mean: what the overview shows
    assert "PSNR.lung.max.study000.slices" not in run.data.metrics  # inf is skipped, MLflow rejects it
    assert "train_loss" not in run.data.metrics  # MONAI's handler logs it (when asked to), not this one twice
    (picture,) = client.list_artifacts(run.info.run_id, "slices/study000_abc123/lung/max")
    assert picture.path.endswith("slice_0003.png")


def test_a_checkpoint_there_before_the_run_is_logged_only_once_the_run_writes_it(tmp_path):
    """A copied bundle's shipped model.pt was logged as the run's checkpoint after its first epoch."""
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    model = tmp_path / "model.pt"
    model.write_bytes(b"shipped")
    engine = _engine([{"loss": 1.0}])

    @engine.on(Events.EPOCH_COMPLETED(once=2))
    def _validated(e):  # attached first, so it runs before the logger's epoch handler, as validation does
        model.write_bytes(b"this run's best")

    MLflowTrainingLogger(checkpoints=[model]).attach(engine)
    MLFlowHandler(tracking_uri=uri, experiment_name="t", iteration_log=False, epoch_log=False,
                  artifact_location=str(tmp_path / "artifacts")).attach(engine)
    client = MlflowClient(tracking_uri=uri)
    after_first_epoch = []

    @engine.on(Events.EPOCH_COMPLETED(once=1))
    def _look(e):
        run_id = find_mlflow_run(e)[1]
        after_first_epoch.extend(a.path for a in client.list_artifacts(run_id, "checkpoints"))

    engine.run([0], max_epochs=2)
    assert after_first_epoch == []
    (run,) = client.search_runs([client.get_experiment_by_name("t").experiment_id])
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    logged = Path(client.download_artifacts(run.info.run_id, "checkpoints/model.pt", str(downloads)))
    assert logged.read_bytes() == b"this run's best"


def _tracked_inference(bundle_root: Path, dataset_dir: Path, out: Path) -> None:
    """The bundle's inference with a baseline and ``--tracking mlflow``, in this process."""
    from monai.bundle import run

    configs = REPO_ROOT / "bundles" / "dcif_gan" / "configs"
    run("inference", config_file=str(configs / "inference.json"), meta_file=str(configs / "metadata.json"),
        logging_file=str(configs / "logging.conf"), bundle_root=str(bundle_root), dataset_dir=str(dataset_dir),
        output_dir=str(out), method="laplacian", windows=["lung"],
        suv_max=12.0, every_k=8, tracking="mlflow")


@pytest.mark.parametrize(("error", "status"), [(RuntimeError("disk full"), "FAILED"), (KeyboardInterrupt(), "KILLED")])
def test_a_run_stopped_by_an_error_is_marked_so_and_the_error_raised(tmp_path, error, status):
    """MLflow showed a run that stopped on an error, or on Ctrl-C, as running, forever."""
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"

    def _step(engine, batch):
        if engine.state.iteration == 2:
            raise error
        return {"loss": 1.0}

    engine = Engine(_step)
    MLflowTrainingLogger({"alpha": 1}).attach(engine)
    MLFlowHandler(tracking_uri=uri, experiment_name="t", iteration_log=False, epoch_log=False,
                  artifact_location=str(tmp_path / "artifacts"), close_on_complete=True).attach(engine)
    with pytest.raises(type(error)):
        engine.run([0, 1, 2], max_epochs=1)
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("t").experiment_id])
    assert run.info.status == status and run.data.params["alpha"] == "1"


def test_a_run_after_an_interrupted_one_is_a_run_of_its_own(tmp_path, tiny_phantom_root, monkeypatch):
    """MONAI's handler, given no run name, logs into the experiment's oldest unfinished run: every run of the bundle
    after one that stopped wrote its params and metrics into that run."""
    out = tmp_path / "out"

    def _interrupted(self, engine):
        raise RuntimeError("interrupted")

    monkeypatch.setattr(FusedVolumeWriter, "__call__", _interrupted)
    with pytest.raises(RuntimeError):  # MONAI names the config expression that raised it
        _tracked_inference(tmp_path, tiny_phantom_root, out)
    monkeypatch.undo()
    _tracked_inference(tmp_path, tiny_phantom_root, out)

    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlruns.db'}")
    experiment = client.get_experiment_by_name("dcif_gan_inference")
    stopped, finished = sorted(client.search_runs([experiment.experiment_id]), key=lambda r: r.info.start_time)
    assert (stopped.info.status, finished.info.status) == ("FAILED", "FINISHED")
    assert stopped.info.run_name != finished.info.run_name
    assert finished.info.run_name.startswith("inference_")
    study = "QABF.lung.laplacian.study000"
    assert study not in stopped.data.metrics and study in finished.data.metrics
    assert finished.data.params["method"] == "laplacian"


def test_inference_run_carries_its_params_study_means_and_executed_config(tmp_path, tiny_datalist, tiny_phantom_root):
    """The bundle's inference with a baseline and --tracking mlflow, read back as a user's MlflowClient would."""
    out = tmp_path / "out"
    _tracked_inference(tmp_path, tiny_phantom_root, out)
    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlruns.db'}")
    (experiment,) = [e for e in client.search_experiments() if e.name == "dcif_gan_inference"]
    (found,) = client.search_runs([experiment.experiment_id])
    run_id, params = found.info.run_id, found.data.params

    assert params["method"] == "laplacian" and params["windows"] == "lung" and params["suv_max"] == "12"
    assert params["every_k"] == "8"  # which slices the study means score
    assert params["model_version.laplacian"] == "no weights" and params["software_version"].startswith("dcif-fusion")
    study = f"QABF.lung.laplacian.study000"
    assert len(client.get_metric_history(run_id, study)) == 1  # one study-level value
    slices = client.get_metric_history(run_id, study + ".slices")
    assert len(slices) >= 2 and len({m.step for m in slices}) == len(slices)  # one point per slice, none twice
    assert np.isclose(found.data.metrics[study], np.mean([m.value for m in slices]))
    artifacts = [a.path for a in client.list_artifacts(run_id)]
    (config,) = [path for path in artifacts if path.startswith("config_") and path.endswith(".json")]
    logged = Path(client.download_artifacts(run_id, config, str(tmp_path / "download"))).read_text()
    # Hospital exports name folders by patient: no local path (here every one is under tmp_path) is logged.
    assert str(tmp_path) not in logged and '"<local path>"' in logged
    assert json.loads(logged)["method"] == "laplacian"
