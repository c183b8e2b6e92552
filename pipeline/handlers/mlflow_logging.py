"""Ignite handlers that write into the MLflow run MONAI's ``--tracking mlflow`` opened.

The bundle's ``--tracking mlflow`` appends a MONAI ``MLFlowHandler`` to the trainer and evaluators;
these handlers find it on the engine and write into the same run, so tracking stays one switch:
without the switch there is no MLflow handler and they do nothing (no store is created).
Each run is named afresh (:func:`new_run_name`) and one that stops on an error is marked so. Names and tags carry
only the study's position in the datalist and its hashed key, never a patient identifier; the executed config they
log was written with its local paths redacted (:mod:`pipeline.bundle_run`).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ignite.engine import Engine, Events
from mlflow.entities import RunStatus
from monai.handlers import MLFlowHandler

from pipeline.fusion.registry import Fuser
from pipeline.provenance import BASELINE_VERSION, SOFTWARE_VERSION, file_digest, fuser_versions
from pipeline.visualization import column_labels, fusion_panel


def find_mlflow_run(engine: Engine) -> tuple[Any, str] | None:
    """The ``(MlflowClient, run_id)`` of an ``MLFlowHandler`` attached to ``engine``, if one is."""
    for handlers in engine._event_handlers.values():
        for handler, _, _ in handlers:
            owner = getattr(handler, "__self__", None)
            if isinstance(owner, MLFlowHandler) and owner.cur_run is not None:
                return owner.client, owner.cur_run.info.run_id
    return None


def new_run_name(job: str) -> str:
    """A name no earlier run has (``training_20261208_023100_5f3a``), for the configs' ``run_name``.

    Without one, MONAI's ``MLFlowHandler`` logs into the oldest unfinished run of the experiment: after a run that
    was interrupted or failed (left running, or marked failed), every later run of the bundle wrote its metrics and
    params into that one, on top of its values. The trainer's and validator's handlers share the name, so one run.
    """
    return f"{job}_{time.strftime('%Y%m%d_%H%M%S')}_{secrets.token_hex(2)}"


def training_params(network: Mapping[str, Any], recipe: Mapping[str, Any] | None = None,
                    **others: Any) -> dict[str, Any]:
    """The params of a training run: the network's hyper-parameters beside the loss recipe's and the others, one
    flat mapping, as MLflow and the training history take them (``variant``, ``width``, ``alpha``, ``lr_g``...)."""
    return {**network, **(recipe or {}), **others}


def fusion_params(fusers: Mapping[str, Fuser], windows: Sequence[str], suv_max: float,
                  checkpoint: str | Path | None = None, every_k: int | None = None) -> dict[str, str]:
    """The params of an inference or evaluation run: what its fused images and their scores depend on.

    ``model_version`` is the loaded weights' digest (the one in the DICOM provenance); ``checkpoint_sha256``
    the checkpoint file's, when a model method loaded one; ``every_k`` which slices the study means score (runs
    with another value showed other means and no reason).
    """
    params = {"method": ",".join(fusers), "windows": ",".join(windows), "suv_max": f"{suv_max:g}",
              "software_version": SOFTWARE_VERSION}
    if every_k is not None:
        params["every_k"] = str(every_k)
    versions = fuser_versions(fusers)
    params.update({f"model_version.{name}": version for name, version in versions.items()})
    if checkpoint is not None and Path(checkpoint).is_file() and any(
            version != BASELINE_VERSION for version in versions.values()):
        params["checkpoint_sha256"] = file_digest(checkpoint)
    return params


class _RunIterationHandler:
    """Base of the loggers: on each iteration, log into the MLflow run when there is one.

    ``params`` are logged once, on the first iteration, when the run MONAI opened exists, and so is
    the newest ``config_*.json`` in ``executed_config_dir``: the executed config MONAI's ``--tracking``
    writes there. MONAI logs it itself only when ``output_dir`` is left to the config: overridden
    (``--output_dir DIR``), its artifact path becomes ``"DIR + '/config_...'"``, which names no file.
    """

    def __init__(self, params: Mapping[str, Any] | None = None,
                 executed_config_dir: str | Path | None = None) -> None:
        self.params = {name: str(value) for name, value in (params or {}).items()}
        self.executed_config_dir = None if executed_config_dir is None else Path(executed_config_dir)
        self._params_logged = False

    def attach(self, engine: Engine) -> None:
        """Attach before ``StatsHandler``: its handler of an error raises it, and ignite then calls no other."""
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)
        engine.add_event_handler(Events.EXCEPTION_RAISED, self._end_stopped)

    @staticmethod
    def _end_stopped(engine: Engine, error: BaseException) -> None:
        """Mark the run KILLED (Ctrl-C) or FAILED, then raise ``error`` on: MLflow showed a run that stopped on an
        error as running, forever. Ignite hands an engine's error to its handlers instead of raising it."""
        found = find_mlflow_run(engine)
        if found is not None:
            status = RunStatus.KILLED if isinstance(error, KeyboardInterrupt) else RunStatus.FAILED
            found[0].set_terminated(found[1], RunStatus.to_string(status))
        raise error

    def __call__(self, engine: Engine) -> None:
        found = find_mlflow_run(engine)
        if found is None:
            return
        if not self._params_logged:
            for name, value in self.params.items():
                found[0].log_param(found[1], name, value[:500])
            configs = sorted(self.executed_config_dir.glob("config_*.json")) if self.executed_config_dir else []
            if configs:
                found[0].log_artifact(found[1], str(configs[-1]))
            self._params_logged = True
        self.log(engine, *found)

    def log(self, engine: Engine, client: Any, run_id: str) -> None:
        raise NotImplementedError


class MLflowSliceLogger(_RunIterationHandler):
    """Per study: a CT | PET | fused picture and the fusion metrics of each scored slice, and their means.

    Reads what :class:`pipeline.handlers.FusionSliceMetrics` put on ``engine.state.fusion_slices``
    for the iteration just finished (which slices: its ``every_k``) and what
    :class:`pipeline.handlers.FusedVolumeWriter` put on ``engine.state.fusion_written`` (the NIfTI
    files), and logs them as images, artifacts and metrics. Names start with the metric and window,
    the part a chart title keeps: ``<metric>.<window>.<method>.study<i>`` is a study's mean over its
    scored slices (one value, what the run overview shows), ``....study<i>.slices`` the per-slice
    series (step = slice index). The picture folders name the study by its hashed key.
    """

    def __init__(self, log_volumes: bool = True, params: Mapping[str, Any] | None = None,
                 executed_config_dir: str | Path | None = None) -> None:
        super().__init__(params, executed_config_dir)
        self.log_volumes = log_volumes

    def log(self, engine: Engine, client: Any, run_id: str) -> None:
        studies: dict[str, list[dict[str, float]]] = {}
        for item in getattr(engine.state, "fusion_slices", []):
            self._log_slice(client, run_id, item)
            studies.setdefault(_metric_prefix(item), []).append(item["metrics"])
        for prefix, rows in studies.items():
            finite = [dict(_finite(row)) for row in rows]
            for name in rows[0]:
                values = [row[name] for row in finite if name in row]
                if values:
                    client.log_metric(run_id, prefix.format(metric=name), float(np.mean(values)))
        if self.log_volumes:
            for path in getattr(engine.state, "fusion_written", []):
                client.log_artifact(run_id, str(path), artifact_path=f"volumes/{Path(path).parent.name}")

    def _log_slice(self, client: Any, run_id: str, item: dict[str, Any]) -> None:
        index = item["slice_index"]
        folder = f"study{item['study_index']:03d}_{item['study_key']}/{item['window']}/{item['method']}"
        picture = fusion_panel(item["ct"], item["pet"], item["fused"], affine=item["affine"],
                               labels=column_labels(item["window"], [(item["method"], item["window"])]))
        client.log_image(run_id, picture, artifact_file=f"slices/{folder}/slice_{index:04d}.png")
        prefix = _metric_prefix(item)
        for name, value in _finite(item["metrics"]):
            client.log_metric(run_id, prefix.format(metric=name) + ".slices", value, step=index)


def _metric_prefix(item: Mapping[str, Any]) -> str:
    """``{metric}.<window>.<method>.study<i>``, with ``{metric}`` left to fill in."""
    return f"{{metric}}.{item['window']}.{item['method']}.study{item['study_index']:03d}"


def _version(path: Path) -> int | None:
    """Which writing of ``path`` is on disk (its modification time), None while there is none."""
    return path.stat().st_mtime_ns if path.is_file() else None


def _finite(metrics: dict[str, float]) -> Iterable[tuple[str, float]]:
    """MLflow rejects inf/nan (PSNR of a perfect copy is inf): skip those values."""
    return ((name, float(value)) for name, value in metrics.items() if value == value and abs(value) != float("inf"))


class MLflowTrainingLogger(_RunIterationHandler):
    """Every loss term of every iteration (D and G, adversarial and content), parameters, checkpoints.

    MONAI's handler logs the single ``loss`` value (as ``train_loss``; not logged again here); a GAN
    needs both players' curves to show it did not collapse. ``params`` are the resolved
    hyper-parameters. ``checkpoints`` (e.g. the best model) are logged
    as artifacts after each epoch in which they changed; validation, which writes the best model,
    runs before this handler at the end of an epoch. One that was there when the run started is not this run's
    until it changes: a copied bundle's shipped ``model.pt`` was logged as the run's checkpoint after its first
    epoch, before any validation had replaced it.
    """

    def __init__(self, params: dict[str, Any] | None = None, checkpoints: Sequence[str | Path] = (),
                 executed_config_dir: str | Path | None = None) -> None:
        super().__init__(params, executed_config_dir)
        self.checkpoints = [Path(path) for path in checkpoints]
        self._logged_versions: dict[Path, int] = {}

    def attach(self, engine: Engine) -> None:
        super().attach(engine)
        engine.add_event_handler(Events.STARTED, self._note_earlier_checkpoints)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._log_checkpoints)

    def _note_earlier_checkpoints(self, engine: Engine) -> None:
        self._logged_versions = {path: version for path in self.checkpoints
                                 if (version := _version(path)) is not None}

    def _log_checkpoints(self, engine: Engine) -> None:
        found = find_mlflow_run(engine)
        if found is None:
            return
        client, run_id = found
        for path in self.checkpoints:
            version = _version(path)
            if version is not None and self._logged_versions.get(path) != version:
                client.log_artifact(run_id, str(path), artifact_path="checkpoints")
                self._logged_versions[path] = version

    def log(self, engine: Engine, client: Any, run_id: str) -> None:
        output = engine.state.output[0] if isinstance(engine.state.output, list) else engine.state.output
        scalars = {name: value for name, value in output.items() if isinstance(value, float) and name != "loss"}
        for name, value in _finite(scalars):
            client.log_metric(run_id, f"train_{name}", value, step=engine.state.iteration)
