"""Record training runs kept as history files into MLflow, one MLflow run per history.

Runs trained where MLflow is not installed (a bare GPU host: ``tools/train_sweep.py``) keep a
``history.json`` per run (:class:`pipeline.tracking.TrainingHistory`). This replays each into the
same kind of store ``--tracking mlflow`` writes: the run's parameters, every per-epoch value as a
metric at that epoch, and the history file itself as an artifact.

    .venv/bin/python tools/record_runs.py runs/*/train/history.json \\
        --tracking-uri sqlite:///bundles/dcif_gan/eval/mlruns.db --experiment dcif_gan_sweep
"""

from __future__ import annotations

import argparse
from pathlib import Path

import mlflow

from pipeline.tracking import read_history, run_name

NOT_METRICS = {"epoch"}


def record(history_path: Path, run_name: str, tags: dict[str, str]) -> str:
    """Log one history file as a finished MLflow run in the active experiment; returns the run id."""
    history = read_history(history_path)
    with mlflow.start_run(run_name=run_name, tags=tags) as run:
        mlflow.log_params({key: str(value)[:500] for key, value in history["params"].items()})
        for row in history["epochs"]:
            metrics = {key: float(value) for key, value in row.items() if key not in NOT_METRICS}
            mlflow.log_metrics(metrics, step=int(row["epoch"]))
        mlflow.log_artifact(str(history_path))
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
    mlflow.set_tracking_uri(args.tracking_uri)
    mlflow.set_experiment(args.experiment)
    for path in args.histories:
        print(f"{run_name(path)}: run {record(path, run_name(path), tags)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
