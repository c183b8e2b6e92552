"""Ship a trained checkpoint in the bundle: generator weights and a card with its evidence.

Training saves ``{"model", "card"}`` with the training facts (network, data, loss weights, seed,
date). This adds what only an evaluation knows, the mean of each fusion metric per CT window
on the held-out studies (read from the ``metrics_per_study.csv`` the bundle's ``evaluate`` wrote)
and the lesion contrast ratio per window (its ``lesion_contrast.json``), and drops everything a
fuser does not need, so the shipped file stays small. The bundle's ``metadata.json`` (``--metadata``, by default
``configs/metadata.json`` beside the ``models`` folder of ``--out`` when there) gets the card's summary as its
``eval_metrics``, so the model-zoo metadata never disagrees with the weights it ships. The writes are atomic.

The card and the evaluation must be of the same model, or the shipped card vouches for weights nobody measured: the
checkpoint must be a generator with a complete card (``network``, ``windows``, ``suv_max``: what
:class:`pipeline.fusion.ModelFuser` checks a run against at load; a training state such as ``train/last.pt`` has
none), loaded as the product loads it; every table and report of the evaluation must have scored its weights (the
weights digest, :func:`pipeline.provenance.fuser_version`, that evaluate records beside each row) at the card's SUV
ceiling, in the card's CT windows. Anything else is refused in one line, before anything is written.

    .venv/bin/python tools/package_model.py runs/cpu_n4/model.pt --evaluation bundles/dcif_gan/eval/real_val \\
        --out bundles/dcif_gan/models/model.pt
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from pipeline.errors import DcifError, error_line, torch_file_problem
from pipeline.fusion import ModelFuser
from pipeline.fusion.selection import MODEL_METHOD
from pipeline.handlers.lesion_report import JSON_NAME, read_lesion_ratios
from pipeline.handlers.metrics_report import SUV_MAX_FIELD, VERSION_FIELD
from pipeline.io.atomic import atomic_write
from pipeline.metrics import METRIC_NAMES
from pipeline.networks import DCIFGenerator
from pipeline.provenance import fuser_version

STUDY_TABLE = "metrics_per_study.csv"
CARD_KEYS = ("network", "windows", "suv_max")
"""What a card must say for :class:`pipeline.fusion.ModelFuser` to check a run against it at load."""


def read_model(path: Path) -> tuple[dict, str]:
    """The checkpoint's saved dict and its weights digest, where it is a generator with a complete card that loads as
    the product loads it (so the digest is the one the product's fused images and evaluations record)."""
    if not path.is_file():
        raise SystemExit(f"{path}: no such checkpoint")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several unrelated types for unreadable files
        problem = torch_file_problem(path, error, "PyTorch checkpoint")
        raise SystemExit(f"{path}: cannot read checkpoint ({problem})") from None
    card = saved.get("card") if isinstance(saved, Mapping) else None
    lacking = [key for key in CARD_KEYS if not isinstance(card, Mapping) or not card.get(key)]
    if lacking:
        raise SystemExit(f"{path}: not a model with a complete card (no {', '.join(lacking)}); package the model.pt "
                         "training writes, not a training state")
    try:
        fuser = ModelFuser(DCIFGenerator(**card["network"]), checkpoint=path)
    except TypeError as error:  # hyper-parameters DCIFGenerator does not take
        raise SystemExit(f"{path}: its card's network is not a DCIFGenerator's ({error})") from None
    except DcifError as error:
        raise SystemExit(str(error)) from None
    return saved, fuser_version(fuser)


def read_json(path: Path) -> Any:
    """``path``'s JSON; a one-line refusal naming it where it cannot be read or parsed."""
    try:
        return json.loads(path.read_text())
    except OSError as error:
        raise SystemExit(f"{path}: cannot read ({error.strerror})") from None
    except ValueError as error:
        raise SystemExit(f"{path}: not JSON ({error})") from None


def model_rows(evaluation_dir: Path, method: str = MODEL_METHOD) -> list[dict[str, str]]:
    """The rows of ``method`` in an evaluation's per-study table."""
    path = evaluation_dir / STUDY_TABLE
    try:
        with path.open() as handle:
            rows = [row for row in csv.DictReader(handle) if row.get("method") == method]
    except OSError as error:
        raise SystemExit(f"{path}: cannot read ({error.strerror}); --evaluation names the output folder of the "
                         "bundle's evaluate") from None
    if not rows:
        raise SystemExit(f"{evaluation_dir}: no '{method}' rows in {STUDY_TABLE}")
    return rows


def evaluation_means(rows: Iterable[dict[str, str]]) -> dict[str, dict[str, float]]:
    """Mean over studies of each metric, per window, from an evaluation's per-study rows of one method."""
    per_window: defaultdict[str, list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        per_window[row["window"]].append(row)
    return {
        window: {name: round(sum(float(r[name]) for r in members) / len(members), 4) for name in METRIC_NAMES}
        | {"studies": len(members)}
        for window, members in per_window.items()
    }


def check_scored(source: Path, digests: set[str | None], ceilings: set[float | None], checkpoint: Path,
                 card: Mapping, digest: str) -> None:
    """``source``, a table or report of an evaluation, says (``digests``, ``ceilings``) it scored ``checkpoint``'s
    weights at its card's SUV ceiling; a refusal otherwise."""
    if None in digests:
        raise SystemExit(f"{source}: records no weights digest (written before 0.9.9): evaluate {checkpoint} again")
    if digests != {digest}:
        raise SystemExit(f"{source}: scored the weights {', '.join(sorted(digests))}, not those of {checkpoint} "
                         f"({digest})")
    if ceilings != {float(card["suv_max"])}:
        scored = ", ".join("none" if ceiling is None else f"{ceiling:g}" for ceiling in ceilings)
        raise SystemExit(f"{source}: scored at SUV ceiling {scored}, {checkpoint}'s card says {card['suv_max']:g}")


def check_evaluation(evaluation_dir: Path, rows: list[dict[str, str]], checkpoint: Path, card: Mapping,
                     digest: str, method: str = MODEL_METHOD) -> None:
    """The per-study table and the lesion report (where there is one) of ``evaluation_dir`` are of ``checkpoint``:
    its weights, its SUV ceiling, its CT windows."""
    table = evaluation_dir / STUDY_TABLE
    check_scored(table, {row.get(VERSION_FIELD) or None for row in rows},
                 {float(row[SUV_MAX_FIELD]) if row.get(SUV_MAX_FIELD) else None for row in rows},
                 checkpoint, card, digest)
    windows = sorted({row["window"] for row in rows})
    if windows != sorted(card["windows"]):
        raise SystemExit(f"{table}: scored the CT windows {', '.join(windows)}, {checkpoint}'s card says "
                         f"{', '.join(card['windows'])}")
    lesion = evaluation_dir / JSON_NAME
    if lesion.is_file():
        report = read_json(lesion)
        ceiling = report.get(SUV_MAX_FIELD)
        check_scored(lesion, {(report.get(VERSION_FIELD) or {}).get(method)},
                     {None if ceiling is None else float(ceiling)}, checkpoint, card, digest)


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


def updated_metadata(path: Path, card: dict) -> str:
    """The bundle metadata at ``path`` with its ``eval_metrics`` replaced by the card's summary, as JSON text."""
    return json.dumps(read_json(path) | {"eval_metrics": summary_metrics(card)}, indent=4) + "\n"


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

    rows = model_rows(args.evaluation)
    saved, digest = read_model(args.checkpoint)
    check_evaluation(args.evaluation, rows, args.checkpoint, saved["card"], digest)
    card = {**saved["card"], "metrics": evaluation_means(rows),
            "lesion_contrast_ratio": read_lesion_ratios(args.evaluation, MODEL_METHOD),
            "evaluated_on": args.evaluated_on} | ({"trained": args.trained} if args.trained else {})
    metadata_text = updated_metadata(metadata, card) if args.metadata or metadata.is_file() else None
    try:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(args.out) as temporary:
            torch.save({"model": saved["model"], "card": card}, temporary)
        if metadata_text is not None:
            with atomic_write(metadata) as temporary:
                temporary.write_text(metadata_text)
    except OSError as error:
        raise SystemExit(error_line(error, args.out)) from None
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB), weights {digest}")
    if metadata_text is not None:
        print(f"updated eval_metrics in {metadata}")
    for window, metrics in card["metrics"].items():
        print(window, metrics, "lesion contrast ratio", card["lesion_contrast_ratio"].get(window))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
