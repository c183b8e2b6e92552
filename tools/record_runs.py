"""Record training runs kept as history files into MLflow, one MLflow run per history.

Runs trained where MLflow is not installed (a bare GPU host: ``tools/train_sweep.py``) keep a
``history.json`` per run (:class:`pipeline.handlers.TrainingHistory`). This replays each into the
same kind of store ``--tracking mlflow`` writes: the run's parameters, every per-epoch value as a
metric at that epoch, and the history file itself as an artifact.

    .venv/bin/python tools/record_runs.py runs/*/train/history.json \\
        --tracking-uri sqlite:///bundles/dcif_gan/eval/mlruns.db --experiment dcif_gan_sweep
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Metric, Param

from pipeline.handlers import read_history, run_name

NOT_METRICS = {"epoch"}


def record(client: MlflowClient, experiment_id: str, history_path: Path, tags: dict[str, str]) -> str:
    """Log one history file as a finished run of ``experiment_id``; returns the run id.

    Goes through an explicit client, not mlflow's process-wide active run and experiment, so
    recording never redirects what a training in the same process logs.
    """
    history = read_history(history_path)
    run = client.create_run(experiment_id, run_name=run_name(history_path), tags=tags)
    now = int(time.time() * 1000)
    params = [Param(key, str(value)[:500]) for key, value in history["params"].items()]
    metrics = [Metric(key, float(value), now, int(row["epoch"]))
               for row in history["epochs"] for key, value in row.items() if key not in NOT_METRICS]
    client.log_batch(run.info.run_id, metrics=metrics, params=params)
    client.log_artifact(run.info.run_id, str(history_path))
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("histories", nargs="+", type=Path, help="history.json files; a run is named by its folder")
    parser.add_argument("--tracking-uri", required=True, help="MLflow store, e.g. sqlite:///eval/mlruns.db")
    parser.add_argument("--experiment", default="dcif_gan_sweep", help="experiment name (default dcif_gan_sweep)")
    parser.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE",
                        help="tag every run (e.g. host=H200); repeatable")
    args = parser.parse_args(argv)
    tags = dict(item.split("=", 1) for item in args.tag)
    client = MlflowClient(tracking_uri=args.tracking_uri)
    experiment = client.get_experiment_by_name(args.experiment)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(args.experiment)
    for path in args.histories:
        print(f"{run_name(path)}: run {record(client, experiment_id, path, tags)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
