"""Train a set of DCIF-GAN configurations side by side, evaluate each, and print one table.

Each run is the bundle's own ``training`` workflow (``python -m monai.bundle run training``) on a
study cache (``tools/build_training_set.py``), with the overrides the sweep file gives it and a
wall-clock budget (``--time-limit``) that is the same for every run, so an ablation compares the
variants at equal cost. All runs start together (one GPU is shared; CPU threads are split among
them). Then the bundle's ``evaluate`` workflow scores every run's best checkpoint and the classical
baselines on the cache's validation studies, and the combined table is printed and written.

The runs table also gives each run's lesion contrast ratio per CT window (fused over PET, from the
evaluation's ``lesion_contrast.json``) and marks the selected run: the best validation Q^AB/F among
the runs that keep at least ``--min-lesion-ratio`` of the PET's lesion contrast in every window.
The fusion metrics alone reward copying the brighter source, which in the lung window hides the
lesion; the product must not ship such a model.

Sweep file (JSON)::

    {"common": {"epochs": 1000, ...},                    # overrides for every run
     "runs": {"n4_detail": {"detail_weight": 1.0}, ...}}  # name -> its own overrides

Override keys are bundle config ids (``generator_config#variant``). Per run, ``<out>/<name>/``
holds ``model.pt`` (best by the training key metric), ``train/history.json``, ``train.log`` and
``eval/``; ``<out>/sweep.md`` holds the table. ``--report-only`` rebuilds the tables from such a
folder (runs trained elsewhere) without training or evaluating.

    python tools/train_sweep.py tools/sweeps/dcif_gan.json --cache data/cache --out runs --time-limit 400
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monai.bundle import ConfigParser

from pipeline.handlers.lesion_report import read_lesion_ratios
from pipeline.handlers.metrics_report import VERSION_FIELD, markdown_summary
from pipeline.io.atomic import atomic_write
from pipeline.handlers import read_history
from pipeline.transforms.data_path import DEFAULT_WINDOWS

CONFIGS = Path(__file__).resolve().parents[1] / "bundles" / "dcif_gan" / "configs"
EVALUATE_CONFIGS = ("inference.json", "evaluate.json")  # evaluation overrides inference
BASELINES = ["average", "max", "laplacian", "dwt"]


def bundle_command(workflow: str, configs: Sequence[str], overrides: dict[str, Any]) -> list[str]:
    """``python -m monai.bundle run <workflow>`` on ``configs`` layered in order, with ``--key value`` overrides (JSON)."""
    files = [str(CONFIGS / config) for config in configs]
    command = [sys.executable, "-m", "monai.bundle", "run", workflow, "--config_file", json.dumps(files),
               "--bundle_root", str(CONFIGS.parent)]
    for key, value in overrides.items():
        command += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
    return command


def launch(commands: dict[str, list[str]], logs: dict[str, Path], threads: int) -> dict[str, int]:
    """Run every command at once, each with ``threads`` CPU threads and its own log; return exit codes."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    running = {}
    for name, command in commands.items():
        logs[name].parent.mkdir(parents=True, exist_ok=True)
        with logs[name].open("w") as log:
            running[name] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    return {name: process.wait() for name, process in running.items()}


def training_overrides(common: dict[str, Any], own: dict[str, Any], run_dir: Path, cache: Path,
                       time_limit: float) -> dict[str, Any]:
    return {**common, **own, "study_cache": str(cache), "model_dir": str(run_dir), "output_dir": str(run_dir),
            "time_limit_s": time_limit}


def evaluation_overrides(methods: list[str], out_dir: Path, cache: Path, checkpoint: Path | None) -> dict[str, Any]:
    overrides = {"study_cache": str(cache), "methods": methods, "output_dir": str(out_dir), "every_k": 1}
    return overrides | ({"checkpoint": str(checkpoint)} if checkpoint else {})


def study_rows(eval_dir: Path, rename: str | None = None) -> list[dict[str, Any]]:
    """The per-study metric rows an evaluation wrote, its model's method renamed to the run's name."""
    path = eval_dir / "metrics_per_study.csv"
    if not path.is_file():
        return []
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        row.update({k: float(v) for k, v in row.items()
                    if k not in ("study_key", "window", "method", "study_index", VERSION_FIELD)})
        if rename and row["method"] == "dcif_gan":
            row["method"] = rename
    return rows


def key_metric() -> str:
    """The metric the training workflow keeps its best checkpoint by (``validate#key_metric`` of train.json)."""
    config = ConfigParser.load_config_file(CONFIGS / "train.json")
    return next(iter(config["validate"]["key_metric"]))


def run_summary(name: str, run_dir: Path, overrides: dict[str, Any], code: int) -> dict[str, Any]:
    """One line of the runs table: its overrides, last epoch reached (counted from the start of a resumed
    run), best validation numbers, lesion ratios."""
    history_path = run_dir / "train" / "history.json"
    epochs = read_history(history_path)["epochs"] if history_path.is_file() else []
    key = key_metric()
    validated = [row for row in epochs if key in row or "val_QABF" in row]
    # The epoch the run's model.pt holds: best by the training key metric (val_QABF in runs from before it was
    # val_selection).
    best = max(validated, key=lambda row: row.get(key, row.get("val_QABF")), default={})
    return {"run": name, "exit": code, "overrides": overrides, "epochs": epochs[-1]["epoch"] if epochs else 0,
            "best_epoch": best.get("epoch"), **{k: v for k, v in best.items() if k.startswith("val_")},
            **{f"lesion_{window}": ratio for window, ratio in read_lesion_ratios(run_dir / "eval", "dcif_gan").items()}}


def select_run(summaries: list[dict[str, Any]], min_lesion_ratio: float) -> str | None:
    """Best validation Q^AB/F among the runs whose lesion ratio reaches ``min_lesion_ratio`` in every window."""
    eligible = [s for s in summaries if "val_QABF" in s
                and all(s.get(f"lesion_{window}", -1.0) >= min_lesion_ratio for window in DEFAULT_WINDOWS)]
    return max(eligible, key=lambda s: s["val_QABF"])["run"] if eligible else None


def runs_table(summaries: list[dict[str, Any]], selected: str | None = None) -> str:
    """One markdown row per run (the selected one in bold): exit code, epochs, validation numbers, lesion
    ratios, its overrides."""
    columns = ("val_QABF", "val_MI", "val_SSIM", *(f"lesion_{window}" for window in DEFAULT_WINDOWS))
    lines = ["| run | exit | epochs | best epoch | val Q^AB/F | val MI | val SSIM | lesion lung | lesion mediastinal "
             "| overrides |", "|---" * 10 + "|"]
    for summary in summaries:
        shown = " | ".join("" if summary.get(k) is None else f"{summary[k]:.4f}" for k in columns)
        name = f"**{summary['run']}**" if summary["run"] == selected else summary["run"]
        lines.append(f"| {name} | {summary['exit']} | {summary['epochs']} | {summary['best_epoch']} | "
                     f"{shown} | `{json.dumps(summary['overrides'])}` |")
    return "\n".join(lines) + "\n"


def train_and_evaluate(runs: dict[str, dict[str, Any]], common: dict[str, Any], cache: Path, out: Path,
                       time_limit: int, threads: int) -> tuple[dict[str, int], dict[str, int]]:
    """Train every run side by side, then evaluate every best checkpoint and the baselines; exit codes."""
    started = time.monotonic()
    commands = {name: bundle_command("training", ["train.json"],
                                     training_overrides(common, own, out / name, cache, time_limit))
                for name, own in runs.items()}
    codes = launch(commands, {name: out / name / "train.log" for name in runs}, threads)
    print(f"trained {len(runs)} runs in {time.monotonic() - started:.0f} s: {codes}", flush=True)

    evaluations = {name: bundle_command("evaluate", EVALUATE_CONFIGS, evaluation_overrides(
                       ["dcif_gan"], out / name / "eval", cache, out / name / "model.pt"))
                   for name in runs if (out / name / "model.pt").is_file()}
    evaluations["baselines"] = bundle_command("evaluate", EVALUATE_CONFIGS,
                                              evaluation_overrides(BASELINES, out / "baselines", cache, None))
    logs = {name: (out / name / "eval.log" if name in runs else out / "baselines.log") for name in evaluations}
    eval_codes = launch(evaluations, logs, threads)
    print(f"evaluated in {time.monotonic() - started:.0f} s: {eval_codes}", flush=True)
    return codes, eval_codes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", type=Path, help="sweep file: {'common': {...}, 'runs': {name: {...}}}")
    parser.add_argument("--cache", type=Path, help="study cache with train and val studies (needed unless --report-only)")
    parser.add_argument("--out", type=Path, default=Path("runs"), help="output folder (default runs/)")
    parser.add_argument("--time-limit", type=int, default=600, help="training seconds per run (default 600)")
    parser.add_argument("--only", nargs="*", help="run only these names from the sweep file")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads per run (default: cores / runs)")
    parser.add_argument("--min-lesion-ratio", type=float, default=0.25,
                        help="lesion contrast (fused / PET) a run must keep in every window to be selected (0.25)")
    parser.add_argument("--report-only", action="store_true",
                        help="rebuild the tables from the runs already in --out; train and evaluate nothing")
    args = parser.parse_args(argv)
    if not args.report_only and args.cache is None:
        parser.error("--cache is required unless --report-only")

    sweep = json.loads(args.sweep.read_text())
    runs = {name: own for name, own in sweep["runs"].items() if not args.only or name in args.only}
    threads = args.threads or max(1, (os.cpu_count() or 1) // max(len(runs), 1))
    out = args.out.resolve()
    common = sweep.get("common", {})
    if args.report_only:
        codes, eval_codes = dict.fromkeys(runs, 0), {}
    else:
        codes, eval_codes = train_and_evaluate(runs, common, args.cache.resolve(), out, args.time_limit, threads)

    rows = study_rows(out / "baselines") + [row for name in runs for row in study_rows(out / name / "eval", name)]
    summaries = [run_summary(name, out / name, own, codes[name]) for name, own in runs.items()]
    selected = select_run(summaries, args.min_lesion_ratio)
    report = (runs_table(summaries, selected) + f"\nselected (lesion ratio >= {args.min_lesion_ratio:g} in every window): "
              f"{selected or 'none'}\n\n" + (markdown_summary(rows) if rows else "no evaluation rows\n"))
    print(report)
    with atomic_write(out / "sweep.md") as temporary:
        temporary.write_text(report)
    with atomic_write(out / "sweep.json") as temporary:
        temporary.write_text(json.dumps({"time_limit_s": args.time_limit, "common": common, "selected": selected,
                                         "min_lesion_ratio": args.min_lesion_ratio, "runs": summaries},
                                        indent=1, default=str))
    return 0 if all(code == 0 for code in [*codes.values(), *eval_codes.values()]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
