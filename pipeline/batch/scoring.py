"""The metrics a batch report gives per fused volume: means of the eight fusion metrics over body slices.

Scoring every slice of a 300-slice CT costs about as much as fusing it (0.2 s a 512 x 512 slice per
volume), so at most ``max_slices`` body slices, evenly spread, are scored; the mean of an even
sample of a few dozen slices is what a report needs to compare studies and methods.
"""

from __future__ import annotations

import math

from pipeline.fusion.streaming import FusedSlab, FusedStudy, StudySink
from pipeline.metrics import score_slices, summarise
from pipeline.transforms.slicing import flagged_slices, spread_slices

DEFAULT_METRIC_SLICES = 32


class StudyScorer(StudySink):
    """Score a fused study as it streams: ``scores`` = ``{"<method>_<window>": {metric: mean}}`` after the run.

    Means over ``max_slices`` body slices (0: all of them). A metric without any finite value (e.g.
    Q^AB/F where no slice has an edge) is None, as JSON has no NaN.
    """

    stage = "metrics"

    def __init__(self, study: FusedStudy, max_slices: int = DEFAULT_METRIC_SLICES) -> None:
        self.names, self.ct_channels = study.names, study.network.ct_channels
        self.chosen = spread_slices(flagged_slices(study.data["body_slices"]), max_slices)
        self._rows: list[list[dict[str, float]]] = [[] for _ in self.names]
        self.scores: dict[str, dict[str, float | None]] = {}

    def add(self, slab: FusedSlab) -> None:
        here = [z - slab.start for z in self.chosen if slab.start <= z < slab.stop]
        for channel, _, metrics in score_slices(slab.fused, slab.image, self.ct_channels, here):
            self._rows[channel].append(metrics)

    def __exit__(self, *exc: object) -> bool | None:
        if exc[0] is None:
            self.scores = {f"{method}_{window}": {name: stats["mean"] if math.isfinite(stats["mean"]) else None
                                                  for name, stats in summarise(rows).items()}
                           for (window, method), rows in zip(self.names, self._rows)}
        return None
