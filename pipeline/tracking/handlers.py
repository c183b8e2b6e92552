"""Ignite handlers that write into the MLflow run MONAI's ``--tracking mlflow`` opened.

The bundle's ``--tracking mlflow`` appends a MONAI ``MLFlowHandler`` to the trainer and evaluators;
these handlers find it on the engine and write into the same run, so tracking stays one switch:
without the switch there is no MLflow handler and they do nothing (no store is created).
Names and tags carry only the study's position in the datalist and its hashed key, never a
patient identifier.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events
from monai.handlers import MLFlowHandler

from pipeline.visualization import fusion_panel


def find_mlflow_run(engine: Engine) -> tuple[Any, str] | None:
    """The ``(MlflowClient, run_id)`` of an ``MLFlowHandler`` attached to ``engine``, if one is."""
    for handlers in engine._event_handlers.values():
        for handler, _, _ in handlers:
            owner = getattr(handler, "__self__", None)
            if isinstance(owner, MLFlowHandler) and owner.cur_run is not None:
                return owner.client, owner.cur_run.info.run_id
    return None


class _RunIterationHandler:
    """Base of the loggers: on each iteration, log into the MLflow run when there is one."""

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        found = find_mlflow_run(engine)
        if found is not None:
            self.log(engine, *found)

    def log(self, engine: Engine, client: Any, run_id: str) -> None:
        raise NotImplementedError


class MLflowSliceLogger(_RunIterationHandler):
    """Per study: a CT | PET | fused picture and the fusion metrics of each scored slice.

    Reads what :class:`pipeline.engines.FusionSliceMetrics` put on ``engine.state.fusion_slices``
    for the iteration just finished (which slices: its ``every_k``) and what
    :class:`pipeline.engines.FusedVolumeWriter` put on ``engine.state.fusion_written`` (the NIfTI
    files), and logs them as images, slice-indexed metrics and artifacts.
    """

    def __init__(self, log_volumes: bool = True) -> None:
        self.log_volumes = log_volumes

    def log(self, engine: Engine, client: Any, run_id: str) -> None:
        for item in getattr(engine.state, "fusion_slices", []):
            self._log_slice(client, run_id, item)
        if self.log_volumes:
            for path in getattr(engine.state, "fusion_written", []):
                client.log_artifact(run_id, str(path), artifact_path=f"volumes/{Path(path).parent.name}")

    def _log_slice(self, client: Any, run_id: str, item: dict[str, Any]) -> None:
        index = item["slice_index"]
        prefix = f"study{item['study_index']:03d}_{item['study_key']}/{item['window']}/{item['method']}"
        picture = fusion_panel(item["ct"], item["pet"], item["fused"])
        client.log_image(run_id, picture, artifact_file=f"slices/{prefix}/slice_{index:04d}.png")
        metric_prefix = prefix.replace("/", ".")
        for name, value in _finite(item["metrics"]):
            client.log_metric(run_id, f"{metric_prefix}.{name}", value, step=index)


def _finite(metrics: dict[str, float]) -> Iterable[tuple[str, float]]:
    """MLflow rejects inf/nan (PSNR of a perfect copy is inf): skip those values."""
    return ((name, float(value)) for name, value in metrics.items() if value == value and abs(value) != float("inf"))


class MLflowTrainingLogger(_RunIterationHandler):
    """Every loss term of every iteration (D and G, adversarial and content), parameters, checkpoints.

    MONAI's handler logs the single ``loss`` value; a GAN needs both players' curves to show it
    did not collapse. ``params`` (the resolved hyper-parameters) are logged once, on the first
    iteration, when the run MONAI opened exists. ``checkpoints`` (e.g. the best model) are logged
    as artifacts after each epoch in which they changed; validation, which writes the best model,
    runs before this handler at the end of an epoch.
    """

    def __init__(self, params: dict[str, Any] | None = None, checkpoints: Sequence[str | Path] = ()) -> None:
        self.params = {name: str(value) for name, value in (params or {}).items()}
        self.checkpoints = [Path(path) for path in checkpoints]
        self._params_logged = False
        self._logged_versions: dict[Path, int] = {}

    def attach(self, engine: Engine) -> None:
        super().attach(engine)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._log_checkpoints)

    def _log_checkpoints(self, engine: Engine) -> None:
        found = find_mlflow_run(engine)
        if found is None:
            return
        client, run_id = found
        for path in self.checkpoints:
            version = path.stat().st_mtime_ns if path.is_file() else None
            if version is not None and self._logged_versions.get(path) != version:
                client.log_artifact(run_id, str(path), artifact_path="checkpoints")
                self._logged_versions[path] = version

    def log(self, engine: Engine, client: Any, run_id: str) -> None:
        if not self._params_logged:
            for name, value in self.params.items():
                client.log_param(run_id, name, value[:500])
            self._params_logged = True
        output = engine.state.output[0] if isinstance(engine.state.output, list) else engine.state.output
        scalars = {name: value for name, value in output.items() if isinstance(value, float)}
        for name, value in _finite(scalars):
            client.log_metric(run_id, f"train_{name}", value, step=engine.state.iteration)
