"""The metrics a batch report gives per fused volume: means of the eight fusion metrics over body slices.

Scoring every slice of a 300-slice CT costs about as much as fusing it (0.2 s a 512 x 512 slice per
volume), so at most ``max_slices`` body slices, evenly spread, are scored; the mean of an even
sample of a few dozen slices is what a report needs to compare studies and methods.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from pipeline.fusion.study import FusedStudy
from pipeline.metrics import fusion_metrics, summarise
from pipeline.transforms.slicing import flagged_slices

DEFAULT_METRIC_SLICES = 32


def spread(indices: Sequence[int], count: int) -> list[int]:
    """At most ``count`` of ``indices``, evenly spread from the first to the last (all when ``count`` is 0)."""
    indices = list(indices)
    if count == 0 or len(indices) <= count:
        return indices
    return [indices[i] for i in np.linspace(0, len(indices) - 1, num=count).round().astype(int)]


def score_fused_study(result: FusedStudy, windows: Sequence[str],
                      max_slices: int = DEFAULT_METRIC_SLICES) -> dict[str, dict[str, float | None]]:
    """``{"<method>_<window>": {metric: mean}}`` over ``max_slices`` body slices (0: all of them).

    A metric without any finite value (e.g. Q^AB/F where no slice has an edge) is None, as JSON has no NaN.
    """
    image = result.data["image"]
    chosen = spread(flagged_slices(result.data["body_slices"]), max_slices)
    scores = {}
    for (window, method), volume in result.fused.items():
        ct, pet = image[list(windows).index(window)], image[-1]
        rows = [fusion_metrics(volume[0, ..., z], ct[..., z], pet[..., z]) for z in chosen]
        scores[f"{method}_{window}"] = {name: stats["mean"] if math.isfinite(stats["mean"]) else None
                                        for name, stats in summarise(rows).items()}
    return scores
