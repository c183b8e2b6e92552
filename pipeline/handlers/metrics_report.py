"""Fusion metric tables: per slice, per study, and a markdown summary with the best marked.

Reporting follows ``fusion_metrics.md``: per slice, then mean and standard deviation over the
slices of a study and over studies, one table per CT window, named with the SUV ceiling. Every row and the summary
say what was scored: each method's weights digest (:func:`pipeline.provenance.fuser_versions`, the one the fused
volumes' headers carry) and the SUV ceiling, so an evaluation cannot be joined to other weights
(``tools/package_model.py`` checks them against the checkpoint it ships).
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ignite.engine import Engine, Events

from pipeline.io.atomic import atomic_write
from pipeline.metrics import METRIC_NAMES, summarise
from pipeline.provenance import BASELINE_VERSION, fuser_versions

VERSION_FIELD = "model_version"
"""Where an evaluation's outputs hold each method's weights digest (or ``BASELINE_VERSION``): a column of the metric
tables, a mapping by method in the lesion report."""
SUV_MAX_FIELD = "suv_max"
"""The column of the metric tables holding the SUV ceiling the PET was scaled at (the lesion report's field too)."""

# All eight metrics are higher-is-better, so 'best' is the column maximum. Statistics come from
# ``summarise``, which leaves out non-finite values (inf PSNR of a perfect copy, nan Q^AB/F).


def grouped_stats(rows: Iterable[dict[str, Any]], by: Sequence[str]) -> dict[tuple, dict[str, dict[str, float]]]:
    """:func:`summarise` the metric columns of ``rows`` per distinct value of the ``by`` columns."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[tuple(row[key] for key in by)].append({name: row[name] for name in METRIC_NAMES})
    return {group: summarise(members) | {"slices": {"n": len(members)}} for group, members in groups.items()}


def study_means(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Average slice rows into one row per (study, window, method): each metric's mean over the study's slices, then
    its population std (``_std``) and how many finite values both used (``_n``: an ``inf`` PSNR or ``nan`` Q^AB/F
    slice is left out, so it can be below ``slices``)."""
    by = ("study_index", "study_key", "window", "method")
    return [
        {**dict(zip(by, group)), "slices": stats["slices"]["n"],
         **{name: stats[name]["mean"] for name in METRIC_NAMES},
         **{f"{name}_std": stats[name]["std"] for name in METRIC_NAMES},
         **{f"{name}_n": stats[name]["n"] for name in METRIC_NAMES}}
        for group, stats in grouped_stats(rows, by).items()
    ]


def method_stats(study_rows: Sequence[dict[str, Any]]) -> dict[tuple[str, str], dict[str, tuple[float, float]]]:
    """Mean and (population) standard deviation over studies, per (window, method) and metric."""
    return {
        group: {name: (stats[name]["mean"], stats[name]["std"]) for name in METRIC_NAMES}
        for group, stats in grouped_stats(study_rows, ("window", "method")).items()
    }


def summary_metrics(study_rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Mean over studies per window, method and metric, named ``window.method.METRIC``."""
    return {
        f"{window}.{method}.{name}": mean_std[0]
        for (window, method), stats in method_stats(study_rows).items()
        for name, mean_std in stats.items()
    }


def with_provenance(rows: Iterable[dict[str, Any]], versions: Mapping[str, str],
                    suv_max: float | None) -> list[dict[str, Any]]:
    """``rows`` each with its method's weights digest (``versions``) and the SUV ceiling, in the last columns."""
    return [{**row, VERSION_FIELD: versions[row["method"]], SUV_MAX_FIELD: suv_max} for row in rows]


def markdown_summary(
    study_rows: Sequence[dict[str, Any]], suv_max: float | None = None, every_k: int | None = None,
    versions: Mapping[str, str] | None = None,
) -> str:
    """One table per window: mean ± std over studies per method, the best value per column in bold; the heading
    names the SUV ceiling and which slices were scored (``every_k``) where the caller knows them, and a first line
    the weights digest of each trained method in ``versions``."""
    stats = method_stats(study_rows)
    trained = {method: version for method, version in (versions or {}).items() if version != BASELINE_VERSION}
    lines: list[str] = [f"Weights scored: {', '.join(f'{m} {v}' for m, v in trained.items())}", ""] if trained else []
    for window in sorted({window for window, _ in stats}):
        methods = [method for win, method in stats if win == window]
        # The largest finite mean: max() over a nan would bold by the methods' order.
        best = {name: np.nanmax([stats[(window, m)][name][0] for m in methods] + [-np.inf]) for name in METRIC_NAMES}
        ceiling = f", PET SUV ceiling {suv_max:g}" if suv_max is not None else ""
        scored = {None: "", 1: ", every body slice scored"}.get(every_k, f", one body slice in {every_k} scored")
        studies = len({row["study_key"] for row in study_rows if row["window"] == window})
        lines += [f"### CT window: {window}{ceiling}{scored} ({studies} studies, each the mean over its slices; "
                  "mean ± population std over studies)", ""]
        lines.append("| method | " + " | ".join(METRIC_NAMES) + " |")
        lines.append("|---" * (len(METRIC_NAMES) + 1) + "|")
        for method in methods:
            cells = []
            for name in METRIC_NAMES:
                mean, std = stats[(window, method)][name]
                cell = f"{mean:.4f} ± {std:.4f}"
                cells.append(f"**{cell}**" if np.isclose(mean, best[name]) else cell)
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines += ["", *wins_table({m: stats[(window, m)] for m in methods}), ""]
    return "\n".join(lines)


def wins(row: dict[str, tuple[float, float]], other: dict[str, tuple[float, float]]) -> int:
    """On how many of the eight metrics ``row``'s mean over studies beats ``other``'s."""
    return sum(row[name][0] > other[name][0] for name in METRIC_NAMES)


def wins_table(stats: dict[str, dict[str, tuple[float, float]]]) -> list[str]:
    """Markdown lines: for each method (row), the metrics it wins against each other method (column)."""
    methods = list(stats)
    lines = [f"Metrics won (of {len(METRIC_NAMES)}, mean over studies), row method against column method:", "",
             "| method | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
    for method in methods:
        cells = ["-" if other == method else str(wins(stats[method], stats[other])) for other in methods]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Write dict rows atomically, columns in first-seen order."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    with atomic_write(path) as tmp:
        tmp.write_text(buffer.getvalue())


class FusionReportWriter:
    """At the end of an evaluation, write the slice and study CSVs and the markdown summary.

    ``suv_max`` and ``every_k`` (the PET's SUV ceiling, and which body slices the scorer took) head the summary, so a
    reader knows what its numbers are of; each method's weights digest, read from the evaluator's network (a
    :class:`~pipeline.fusion.FusionNetwork`) as the fused volumes' writer reads it, and the SUV ceiling go in every
    row of the CSVs too.
    """

    def __init__(self, output_dir: str | Path, suv_max: float | None = None, every_k: int | None = None) -> None:
        self.output_dir = Path(output_dir)
        self.suv_max = suv_max
        self.every_k = every_k

    def attach(self, engine: Engine) -> None:
        # EPOCH_COMPLETED (not COMPLETED) so an MLFlowHandler attached after us logs the means.
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        rows = getattr(engine.state, "fusion_rows", [])
        if not rows:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        versions = fuser_versions(engine.network.fusers)
        study_rows = study_means(rows)
        write_csv(self.output_dir / "metrics_per_slice.csv", with_provenance(rows, versions, self.suv_max))
        write_csv(self.output_dir / "metrics_per_study.csv", with_provenance(study_rows, versions, self.suv_max))
        summary = markdown_summary(study_rows, self.suv_max, self.every_k, versions)
        with atomic_write(self.output_dir / "metrics_summary.md") as tmp:
            tmp.write_text(summary)
        engine.state.metrics.update(summary_metrics(study_rows))
