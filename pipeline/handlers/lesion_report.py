"""Check, study by study as the evaluator runs, that every fused output keeps the lesion visible.

Same evaluator layout as :class:`pipeline.handlers.FusionSliceMetrics`: ``image`` holds the CT
windows then the scaled PET, ``pred`` one channel per (window, method). The lesion is the batch's ``label``, the
tumour the data path gives where the datalist knows one (:class:`~pipeline.transforms.lesion.KnownLesiond`: the
phantom's ``truth``, else the study's ``lesion_mask`` contour) and a study cache keeps, else the PET threshold;
definitions in :mod:`pipeline.metrics.lesion`. Rows carry the study's hash key, never a patient identifier.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ignite.engine import Engine, Events
from monai.data.utils import affine_to_spacing
from PIL import Image

from pipeline.handlers.metrics_report import VERSION_FIELD
from pipeline.handlers.slice_metrics import batch_field, evaluator_volumes, study_affine
from pipeline.io.atomic import atomic_write
from pipeline.metrics.lesion import (
    DEFAULT_FRACTION,
    DEFAULT_RING_MM,
    lesion_contrast_ratio,
    lesion_mask_from_pet,
    ring_mask,
)
from pipeline.provenance import fuser_versions
from pipeline.visualization.panels import column_labels, fusion_panel

JSON_NAME = "lesion_contrast.json"
PANEL_DIR = "lesion_panels"
MARKDOWN_NAME = "lesion_contrast.md"


def ratio_summary(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and min ratio per (window, method) over the studies where the ratio is defined."""
    ratios: dict[tuple[str, str], list[float]] = defaultdict(list)
    for row in rows:
        ratios[(row["window"], row["method"])].append(row["ratio"])
    summary = []
    for (window, method), values in ratios.items():
        finite = np.array([v for v in values if math.isfinite(v)], dtype=np.float64)
        mean, median, low = ((float(finite.mean()), float(np.median(finite)), float(finite.min()))
                             if finite.size else (math.nan,) * 3)
        summary.append({"window": window, "method": method, "mean_ratio": mean, "median_ratio": median,
                        "min_ratio": low, "studies": int(finite.size)})
    return summary


def markdown_table(
    summary: Sequence[dict[str, Any]], fraction: float, ring_mm: float, suv_max: float | None = None
) -> str:
    """The summary as a markdown table, headed by the lesion and ring definitions used and the PET's SUV ceiling (the
    PET's contrast, and so the ratio, is of the PET clipped there)."""
    ceiling = f"PET SUV ceiling {suv_max:g}; " if suv_max is not None else ""
    lines = [
        f"### Lesion contrast ratio C(fused) / C(PET), C = mean lesion - mean ring (lesion: the study's tumour "
        f"contour, or the phantom's designed tumour, else the scaled PET >= {fraction:.0%} of its max, which is "
        f"the ceiling where the PET reaches it; ring {ring_mm:g} mm; {ceiling}studies: those with a defined ratio)",
        "",
        "| window | method | mean ratio | median ratio | min ratio | studies |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {s['window']} | {s['method']} | {s['mean_ratio']:.4f} | {s['median_ratio']:.4f} "
              f"| {s['min_ratio']:.4f} | {s['studies']} |" for s in summary]
    return "\n".join(lines) + "\n"


def read_lesion_ratios(output_dir: str | Path, method: str) -> dict[str, float]:
    """Mean lesion contrast ratio of ``method`` per CT window, from the report an evaluation wrote in
    ``output_dir``; empty when there is no report. Windows whose ratio was undefined are left out."""
    path = Path(output_dir) / JSON_NAME
    if not path.is_file():
        return {}
    summary = json.loads(path.read_text())["summary"]
    return {group["window"]: group["mean_ratio"] for group in summary
            if group["method"] == method and group["mean_ratio"] is not None}


def _json_safe(row: dict[str, Any]) -> dict[str, Any]:
    """JSON has no nan: an undefined contrast or ratio is written as null."""
    return {key: None if isinstance(value, float) and not math.isfinite(value) else value
            for key, value in row.items()}


class LesionContrastReport:
    """Lesion contrast rows per study and (window, method); a JSON and a markdown report at the end.

    Args:
        output_dir: where ``lesion_contrast.json`` and ``lesion_contrast.md`` go.
        fraction: PET threshold of the lesion, as a fraction of its maximum (real data).
        ring_mm: width of the surrounding shell the lesion is compared with.
        suv_max: the SUV ceiling the PET was scaled and clipped at; recorded with the report, whose ratios
            depend on it.
        panels: also write ``lesion_panels/<study key>_<window>.png``, the axial slice with the
            largest lesion area as CT | PET | each method in the network's order, so a reader sees
            what the ratios mean.
    """

    def __init__(
        self,
        output_dir: str | Path,
        fraction: float = DEFAULT_FRACTION,
        ring_mm: float = DEFAULT_RING_MM,
        panels: bool = True,
        suv_max: float | None = None,
    ) -> None:
        self.panels = panels
        self.output_dir = Path(output_dir)
        self.fraction = fraction
        self.ring_mm = ring_mm
        self.suv_max = suv_max

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)
        engine.add_event_handler(Events.COMPLETED, self.write)

    def _reset(self, engine: Engine) -> None:
        engine.state.lesion_rows = []

    def __call__(self, engine: Engine) -> None:
        image, pred = evaluator_volumes(engine)
        channels, methods = engine.network.channels, list(engine.network.fusers)
        affine = study_affine(engine)
        pet = image[-1]
        label = engine.state.batch.get("label")
        if label is None:
            source, lesion = "pet_threshold", lesion_mask_from_pet(pet, self.fraction)
        else:  # a cached study's label says no more than that the cache kept it
            source = batch_field(engine, "lesion_source") if "lesion_source" in engine.state.batch else "cache"
            lesion = label[0, 0].cpu().numpy() > 0.5
        ring = ring_mask(lesion, np.asarray(affine_to_spacing(affine, r=3)), self.ring_mm)
        study_key = batch_field(engine, "study_key")
        for w, window in enumerate(engine.network.windows):
            fused = pred[[channels.index((window, method)) for method in methods]]
            for method, image_fused in zip(methods, fused):
                contrast = lesion_contrast_ratio(image_fused, pet, lesion, ring)
                engine.state.lesion_rows.append({"study_key": study_key, "window": window, "method": method,
                                                 "lesion": source, **contrast})
            if self.panels and lesion.any():
                labels = column_labels(window, ((method, window) for method in methods))
                self._write_panel(f"{study_key}_{window}.png", image[w], pet, fused, lesion, affine, labels)

    def _write_panel(self, name: str, ct: np.ndarray, pet: np.ndarray, fused: np.ndarray, lesion: np.ndarray,
                     affine: np.ndarray, labels: list[str]) -> None:
        """CT | PET | each fused image at the axial slice holding the most lesion voxels, named, atomically."""
        z = int(np.argmax(lesion.sum(axis=(0, 1))))
        picture = fusion_panel(ct[..., z], pet[..., z], *(channel[..., z] for channel in fused), affine=affine,
                               labels=labels)
        folder = self.output_dir / PANEL_DIR
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_write(folder / name) as temporary:
            Image.fromarray(picture).save(temporary, format="PNG")

    def write(self, engine: Engine) -> None:
        """Write the rows and their per (window, method) summary, each file atomically, with what made them: each
        method's weights digest and the SUV ceiling."""
        rows = getattr(engine.state, "lesion_rows", [])
        if not rows:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        summary = ratio_summary(rows)
        report = {
            "fraction": self.fraction,
            "ring_mm": self.ring_mm,
            "suv_max": self.suv_max,
            VERSION_FIELD: fuser_versions(engine.network.fusers),
            "rows": [_json_safe(row) for row in rows],
            "summary": [_json_safe(group) for group in summary],
        }
        with atomic_write(self.output_dir / JSON_NAME) as tmp:
            tmp.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
        with atomic_write(self.output_dir / MARKDOWN_NAME) as tmp:
            tmp.write_text(markdown_table(summary, self.fraction, self.ring_mm, self.suv_max))
