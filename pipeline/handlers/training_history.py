"""A training run's history as one JSON file: loss terms and validation metrics per epoch.

MLflow keeps the same numbers when ``--tracking mlflow`` is on; this file is what survives where
MLflow is not installed (a bare GPU host), feeds the loss-curve plot, and can be replayed into
MLflow afterwards (``tools/record_runs.py``). It is rewritten atomically after every epoch, so a
run killed at its time limit still leaves every finished epoch behind, and a run resumed into the
same folder keeps the epochs before its resume point.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events

from pipeline.io.atomic import atomic_write


class TrainingHistory:
    """Per-epoch means of every scalar the trainer reports, and the validator's metrics.

    Args:
        path: the JSON file to write (``{"params": ..., "epochs": [{"epoch", "iterations",
            "seconds", <loss terms>, <validation metrics>...}, ...]}``).
        params: the run's configuration, stored as given.
        validator: the evaluator of the ``ValidationHandler``; its metrics land on the epoch it ran in.
    """

    def __init__(self, path: str | os.PathLike[str], params: Mapping[str, Any] | None = None,
                 validator: Engine | None = None) -> None:
        self.path = Path(path)
        self.params = dict(params or {})
        self.validator = validator
        self.epochs: dict[int, dict[str, float]] = {}
        self._sums: defaultdict[str, float] = defaultdict(float)
        self._count = 0
        self._started = time.monotonic()
        self._trainer: Engine | None = None
        self._earlier_checked = False

    def attach(self, engine: Engine) -> None:
        self._trainer = engine
        engine.add_event_handler(Events.STARTED, self._start)
        engine.add_event_handler(Events.EPOCH_STARTED, self._keep_earlier)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._accumulate)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._close_epoch)
        if self.validator is not None:
            self.validator.add_event_handler(Events.COMPLETED, self._record_validation)

    def _start(self, engine: Engine) -> None:
        self._started = time.monotonic()
        self._earlier_checked = False

    def _keep_earlier(self, engine: Engine) -> None:
        """On a resumed run, keep the epochs the file already holds from before the resume point.

        Read when the first epoch starts, not at STARTED: the bundle's checkpoint loader restores the
        trainer's epoch in a STARTED handler attached after this one.
        """
        if self._earlier_checked:
            return
        self._earlier_checked = True
        resume_point = engine.state.epoch - 1
        if resume_point and self.path.is_file():
            earlier = read_history(self.path).get("epochs", [])
            self.epochs.update({row["epoch"]: row for row in earlier if row["epoch"] <= resume_point})

    def _accumulate(self, engine: Engine) -> None:
        output = engine.state.output
        # Decollated trainers replicate the batch's scalars into every sample's dict.
        first = output[0] if isinstance(output, list) else output
        for name, value in first.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self._sums[name] += float(value)
        self._count += 1

    def _row(self, epoch: int) -> dict[str, float]:
        return self.epochs.setdefault(epoch, {"epoch": epoch})

    def _close_epoch(self, engine: Engine) -> None:
        row = self._row(engine.state.epoch)
        row.update({name: total / max(self._count, 1) for name, total in self._sums.items()})
        row.update(iterations=self._count, seconds=round(time.monotonic() - self._started, 1))
        self._sums.clear()
        self._count = 0
        self.write()

    def _record_validation(self, validator: Engine) -> None:
        epoch = self._trainer.state.epoch if self._trainer is not None else validator.state.epoch
        self._row(epoch).update({name: float(value) for name, value in validator.state.metrics.items()
                                 if isinstance(value, (int, float)) and math.isfinite(value)})
        self.write()

    def write(self) -> None:
        """Rewrite the history file with every epoch so far."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        content = {"params": self.params, "epochs": [self.epochs[e] for e in sorted(self.epochs)]}
        with atomic_write(self.path) as temporary:
            temporary.write_text(json.dumps(content, indent=1, default=str))


def read_history(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A history file written by :class:`TrainingHistory`."""
    return json.loads(Path(path).read_text())


def run_name(path: str | os.PathLike[str]) -> str:
    """A run's name from its history file: ``<output_dir>/train/history.json`` gives ``<output_dir>``'s name."""
    path = Path(path)
    return path.parent.parent.name if path.parent.name == "train" else path.parent.name
