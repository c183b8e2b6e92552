"""MLflow loggers write into the run MONAI's handler opened, and do nothing without one."""

from __future__ import annotations

import numpy as np
from ignite.engine import Engine, Events
from mlflow import MlflowClient
from monai.handlers import MLFlowHandler

from pipeline.tracking import MLflowSliceLogger, MLflowTrainingLogger, find_mlflow_run


def _engine(output) -> Engine:
    return Engine(lambda engine, batch: output)


def _slice_item(index: int) -> dict:
    ramp = np.linspace(0, 1, 16 * 16, dtype=np.float32).reshape(16, 16)
    return {"study_index": 0, "study_key": "abc123", "window": "lung", "method": "max", "slice_index": index,
            "ct": ramp, "pet": ramp.T, "fused": np.maximum(ramp, ramp.T),
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
    (qabf,) = client.get_metric_history(run.info.run_id, "study000_abc123.lung.max.QABF")
    assert qabf.step == 3 and qabf.value == 0.5
    assert "study000_abc123.lung.max.PSNR" not in run.data.metrics  # inf is skipped, MLflow rejects it
    (picture,) = client.list_artifacts(run.info.run_id, "slices/study000_abc123/lung/max")
    assert picture.path.endswith("slice_0003.png")
