"""Ship a trained checkpoint in the bundle: generator weights and a card with its evidence.

Training saves ``{"model", "card"}`` with the training facts (network, data, loss weights, seed,
date). This adds what only an evaluation knows, the mean of each fusion metric per CT window
on the held-out studies (read from the ``metrics_per_study.csv`` the bundle's ``evaluate`` wrote)
and the lesion contrast ratio per window (its ``lesion_contrast.json``), and drops everything a
fuser does not need, so the shipped file stays small. The bundle's ``metadata.json`` (``--metadata``, by default
``configs/metadata.json`` beside the ``models`` folder of ``--out`` when there) gets the card's summary as its
``eval_metrics``, so the model-zoo metadata never disagrees with the weights it ships. The writes are atomic.

    .venv/bin/python tools/package_model.py runs/cpu_n4/model.pt --evaluation bundles/dcif_gan/eval/real_val \\
        --out bundles/dcif_gan/models/model.pt
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import defaultdict
from pathlib import Path

import torch

from pipeline.handlers.lesion_report import read_lesion_ratios
from pipeline.io.atomic import atomic_write
from pipeline.metrics import METRIC_NAMES


def evaluation_means(evaluation_dir: Path, method: str = "dcif_gan") -> dict[str, dict[str, float]]:
    """Mean over studies of each metric of ``method``, per window, from an evaluation's per-study table."""
    with (evaluation_dir / "metrics_per_study.csv").open() as handle:
        rows = [row for row in csv.DictReader(handle) if row["method"] == method]
    if not rows:
        raise SystemExit(f"{evaluation_dir}: no '{method}' rows in metrics_per_study.csv")
    per_window: defaultdict[str, list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        per_window[row["window"]].append(row)
    return {
        window: {name: round(sum(float(r[name]) for r in members) / len(members), 4) for name in METRIC_NAMES}
        | {"studies": len(members)}
        for window, members in per_window.items()
    }


SUMMARY_METRICS = ("QABF", "MI", "SSIM")
"""The metrics ``metadata.json`` summarises per window (the card and the model card hold all eight)."""


def summary_metrics(card: dict) -> dict[str, object]:
    """``metadata.json``'s ``eval_metrics``: a shipped card's means of :data:`SUMMARY_METRICS` and lesion contrast
    ratio per window, and what they were measured on."""
    summary: dict[str, object] = {f"{name}_{window}": metrics[name] for window, metrics in card["metrics"].items()
                                  for name in SUMMARY_METRICS}
    summary |= {f"lesion_contrast_ratio_{window}": round(ratio, 4)
                for window, ratio in card["lesion_contrast_ratio"].items()}
    return summary | {"note": f"means over {card['evaluated_on']}; full tables, baselines and the lesion check in "
                              "docs/README.md"}


def update_metadata(path: Path, card: dict) -> None:
    """Replace the ``eval_metrics`` of the bundle metadata at ``path`` by the card's summary, atomically."""
    metadata = json.loads(path.read_text())
    metadata["eval_metrics"] = summary_metrics(card)
    with atomic_write(path) as temporary:
        temporary.write_text(json.dumps(metadata, indent=4) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="model.pt written by the bundle's training")
    parser.add_argument("--evaluation", type=Path, required=True, help="output folder of the bundle's evaluate run")
    parser.add_argument("--evaluated-on", default="held-out validation studies",
                        help="what the evaluation ran on, for the card")
    parser.add_argument("--out", type=Path, required=True, help="where to write the shipped checkpoint")
    parser.add_argument("--trained", help="how and where it trained (epochs, hardware), for the card")
    parser.add_argument("--metadata", type=Path,
                        help="bundle metadata.json whose eval_metrics to update (default: configs/metadata.json "
                             "beside the models folder of --out, when there)")
    args = parser.parse_args(argv)
    metadata = args.metadata or args.out.parent.parent / "configs" / "metadata.json"

    metrics = evaluation_means(args.evaluation)
    if not args.checkpoint.is_file():
        raise SystemExit(f"{args.checkpoint}: no such checkpoint")
    saved = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
    card = {**saved.get("card", {}), "metrics": metrics,
            "lesion_contrast_ratio": read_lesion_ratios(args.evaluation, "dcif_gan"),
            "evaluated_on": args.evaluated_on} | ({"trained": args.trained} if args.trained else {})
    shipped = {"model": saved["model"], "card": card}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(args.out) as temporary:
        torch.save(shipped, temporary)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")
    if args.metadata or metadata.is_file():
        update_metadata(metadata, card)
        print(f"updated eval_metrics in {metadata}")
    for window, metrics in card["metrics"].items():
        print(window, metrics, "lesion contrast ratio", card["lesion_contrast_ratio"].get(window))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
