"""Training histories into MLflow runs and into the loss-curve figure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient

@pytest.fixture()
def history(tmp_path) -> Path:
    path = tmp_path / "n4_test" / "train" / "history.json"
    path.parent.mkdir(parents=True)
    epochs = [{"epoch": e, "loss": 10.0 / e, "d_loss": 0.5 / e, "g_adv1": 7.0, "g_adv2": 7.5, "val_QABF": 0.1 * e}
              for e in (1, 2, 3)]
    path.write_text(json.dumps({"params": {"alpha": 100.0, "variant": "network4"}, "epochs": epochs}))
    return path


def test_a_history_becomes_an_mlflow_run_with_per_epoch_metrics(history, tmp_path, load_tool):
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    assert load_tool("record_runs").main([str(history), "--tracking-uri", uri, "--tag", "host=test"]) == 0
    client = MlflowClient(tracking_uri=uri)
    (experiment,) = [e for e in client.search_experiments() if e.name == "dcif_gan_sweep"]
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "n4_test" and run.data.tags["host"] == "test"
    assert run.data.params == {"alpha": "100.0", "variant": "network4"}
    qabf = client.get_metric_history(run.info.run_id, "val_QABF")
    assert [(m.step, round(m.value, 6)) for m in qabf] == [(1, 0.1), (2, 0.2), (3, 0.3)]
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["history.json"]


def test_the_curves_figure_is_a_png_with_every_panel(history, tmp_path, load_tool):
    plot = load_tool("plot_training")
    out = tmp_path / "curves.png"
    assert plot.main([str(history), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    epochs = json.loads(history.read_text())["epochs"]
    assert plot.series(epochs, ("g_adv1", "g_adv2")) == ([1, 2, 3], [14.5, 14.5, 14.5])
    assert plot.series(epochs, "val_MI") == ([], [])
