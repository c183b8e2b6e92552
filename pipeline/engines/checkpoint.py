"""What a checkpoint carries besides weights: the card that says how the model was trained.

MONAI's ``CheckpointSaver`` stores ``state_dict()`` of each object it is given. Handing it the
training facts (network hyper-parameters, windows, SUV ceiling, data) as a :class:`SavedDict` under
``card`` gives exactly the layout :class:`pipeline.fusion.ModelFuser` reads back and checks:
``{"model": weights, "card": facts}``; the best model's :class:`ModelCard` adds the epoch and validation scores
it was saved at. A resumable training state (:func:`training_state`) adds the discriminators, both optimizers, the
trainer and the best validation score so far, and loads into the optimizers as configured;
:class:`TrainingStateLoader` also resumes a state written before it held the score, and refuses a file that is no
training state of the configured network in one line.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from monai.handlers import CheckpointLoader, CheckpointSaver
from torch.optim import Optimizer

from pipeline.errors import CheckpointError, torch_file_problem

logger = logging.getLogger(__name__)

# Optimizer settings the run's config decides, whatever a loaded state says: the update's hyper-parameters, and the
# implementation. Only the moments (each parameter's state) come from the state.
_HYPERPARAMETERS = ("lr", "betas", "eps", "weight_decay")
_IMPLEMENTATION = ("fused", "foreach")
_CONFIGURED = _HYPERPARAMETERS + _IMPLEMENTATION

# How MONAI's CheckpointSaver names a training state it saves every epoch (no file prefix, several objects).
_EPOCH_STATE = re.compile(r"checkpoint_epoch=(\d+)\.pt")


class SavedDict:
    """Plain values that ignite's ``Checkpoint`` saves and restores like a module's state.

    Not a ``Mapping`` on purpose: ignite walks mappings looking for objects with ``state_dict``.
    """

    def __init__(self, recipe: Mapping[str, Any] | None = None, **values: Any) -> None:
        """``recipe``: values shared with another record (the training's loss settings), merged in flat."""
        self.values = {**(recipe or {}), **values}

    def state_dict(self) -> dict[str, Any]:
        return dict(self.values)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.values = dict(state)


class ModelCard(SavedDict):
    """The best model's card: the training facts, and the epoch and validation scores of the weights it is saved with.

    Listed among the validator's handlers (``attach`` only remembers the validator: the config cannot hand it over,
    as the validator's own best-model saver holds this card). It reads them when the saver saves, at the end of the
    validation that made that model the best: ``epoch`` is the training epoch, ``validation`` every metric by the
    validator's name for it, the key metric among them. :class:`BestScore` tells by them which epoch a model file is.
    """

    def __init__(self, recipe: Mapping[str, Any] | None = None, **values: Any) -> None:
        super().__init__(recipe, **values)
        self.validator: Engine | None = None

    def attach(self, validator: Engine) -> None:
        self.validator = validator

    def state_dict(self) -> dict[str, Any]:
        card = super().state_dict()
        if self.validator is None:
            return card
        state = self.validator.state
        scores = {name: float(value) for name, value in state.metrics.items() if isinstance(value, (int, float))}
        return {**card, "epoch": int(state.epoch), "validation": scores}


class BestScore:
    """The validator's best key-metric score and its epoch, as a training state keeps them, and the best model file
    (``best_model``, the saver's) they belong to.

    The best model's ``CheckpointSaver`` compares a score with those it saved in its own process, so a resumed run's
    first validation would replace the best model whatever its score: restored here, it must beat the run's best
    while that model is on disk. The score is restored only with the file it belongs to, the one whose card records
    that epoch and score. Resumed into another ``model_dir``, or one whose file is another epoch's (or has a card from
    before 0.9.9, which records neither), the best score stays with the folder that holds its model and selection
    starts afresh here: the first validation writes the best model, as in a new run. Kept regardless, a score from
    elsewhere froze the file here at an epoch it did not describe.

    Attached to the trainer, it warns, naming the file, when the run starts with a best model in ``model_dir`` that is
    not its own (a copied bundle's shipped weights, another run's): the first validation replaces it.
    """

    def __init__(self, validator: Engine, saver: CheckpointSaver, best_model: str | os.PathLike[str]) -> None:
        self.validator = validator
        self.saver = saver
        self.best_model = Path(best_model)
        self.kept = False  # whether the file in model_dir is this run's best model, restored with its score

    def attach(self, trainer: Engine) -> None:
        # At the first epoch, not at STARTED: the state loader, attached after this, restores the score at STARTED.
        trainer.add_event_handler(Events.EPOCH_STARTED, self._check_model_dir)

    def _check_model_dir(self, trainer: Engine) -> None:
        trainer.remove_event_handler(self._check_model_dir, Events.EPOCH_STARTED)
        if not self.kept and self.best_model.is_file() and idist.get_rank() == 0:
            logger.warning("%s is not this run's best model (another run's, or another epoch's): the run's first "
                           "validation replaces it", self.best_model)

    def state_dict(self) -> dict[str, float]:
        return {"best_metric": float(self.validator.state.best_metric),
                "best_metric_epoch": int(self.validator.state.best_metric_epoch)}

    def load_state_dict(self, state: Mapping[str, float]) -> None:
        score, epoch = float(state["best_metric"]), int(state["best_metric_epoch"])
        if epoch < 0:  # nothing validated yet: the validator's own start
            return
        if not self._holds(epoch, score):
            logger.info("the resumed run's best model (epoch %d, %s %.4f) is not %s: model selection starts afresh "
                        "in this folder", epoch, self.validator.state.key_metric_name, score, self.best_model)
            return
        self.validator.state.best_metric, self.validator.state.best_metric_epoch = score, epoch
        self.saver.load_state_dict({"_saved": [(score, self.best_model.name)]})  # the saver replaces it when beaten
        self.kept = True

    def _holds(self, epoch: int, score: float) -> bool:
        """Whether the best model file is the one saved at ``epoch`` with ``score``, by its card."""
        if not self.best_model.is_file():
            return False
        try:
            saved = torch.load(self.best_model, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - torch's unpickler raises whatever it meets in a file that is no checkpoint
            return False
        card = saved.get("card", {}) if isinstance(saved, dict) else {}
        written = card.get("validation", {}).get(self.validator.state.key_metric_name, math.nan)
        return card.get("epoch") == epoch and math.isclose(written, score, rel_tol=1e-9)


def training_state(gan: Any, g_optimizer: Any, d_optimizer: Any, trainer: Any,
                   best: BestScore | None = None) -> dict[str, Any]:
    """What a resumable training checkpoint holds, one dict for its saver and its loader alike.

    ``model`` is the generator under the key the shipped ``model.pt`` uses, so either file loads
    the weights the same way. The optimizers' settings as configured now (before any state is loaded) are the ones
    a loaded state runs with (:func:`keep_configured`).
    """
    for name, optimizer in (("g_optimizer", g_optimizer), ("d_optimizer", d_optimizer)):
        configured = [{key: group[key] for key in _CONFIGURED if key in group} for group in optimizer.param_groups]
        optimizer.register_load_state_dict_post_hook(functools.partial(keep_configured, configured=configured,
                                                                       name=name))
    state = {"model": gan.generator, "d1": gan.d1, "d2": gan.d2,
             "g_optimizer": g_optimizer, "d_optimizer": d_optimizer, "trainer": trainer}
    return state if best is None else {**state, "best": best}


class TrainingStateLoader(CheckpointLoader):
    """MONAI's ``CheckpointLoader`` for a :func:`training_state`, which also resumes a state written before the state
    held its best score: the score then starts afresh, as it did, with a warning.

    A file that is no training state of the configured network, or one already at the run's last epoch, ends the run
    in one line as the loader is attached, before the engine runs (whose handlers would log a traceback): a model file
    (``model.pt``: weights and card, no trainer), a state of another network (the first parameter that differs, both
    shapes: a strict load listed every one), a state with nothing left to train.
    """

    ADDED_LATER = ("best",)

    def attach(self, engine: Engine) -> None:
        self._check(self._read(), engine)
        super().attach(engine)

    def __call__(self, engine: Engine) -> None:
        configured = engine.state.epoch_length
        self._load(engine)
        if configured and engine.state.epoch_length != configured:
            logger.warning("%s: its epochs were %d iterations, this run's data make %d: the run keeps %d, the length "
                           "its resume point is counted in (train afresh for epochs of the new length)",
                           self.load_path, engine.state.epoch_length, configured, engine.state.epoch_length)

    def _load(self, engine: Engine) -> None:
        held = self._read()
        absent = [key for key in self.ADDED_LATER if key in self.load_dict and key not in held]
        if not absent:
            super().__call__(engine)
            return
        logger.warning("%s predates the training state's %s: the first validation after the resume saves the "
                       "best model whatever its score", self.load_path, ", ".join(absent))
        every = self.load_dict
        self.load_dict = {key: value for key, value in every.items() if key not in absent}
        try:
            super().__call__(engine)
        finally:
            self.load_dict = every

    def _read(self) -> dict[str, Any]:
        try:
            held = torch.load(self.load_path, map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 - torch's unpickler raises whatever it meets in a file that is none
            problem = torch_file_problem(self.load_path, error, "training state")
            raise CheckpointError(f"{self.load_path}: not a readable training state ({problem})") from error
        if not isinstance(held, dict):
            raise CheckpointError(f"{self.load_path}: not a training state (a {type(held).__name__})")
        return held

    def _check(self, held: Mapping[str, Any], engine: Engine) -> None:
        if "trainer" in self.load_dict and "trainer" not in held:
            raise CheckpointError(f"{self.load_path}: a model file, not a training state (it holds "
                                  f"{', '.join(map(str, held))}; no trainer): resume from the last.pt or "
                                  "checkpoint_epoch=N.pt a training run writes in its train_dir")
        for key, module in self.load_dict.items():
            if isinstance(module, torch.nn.Module) and key in held:
                difference = _parameter_difference(held[key], module.state_dict())
                if difference:
                    raise CheckpointError(f"{self.load_path}: a training state of another network: {key}.{difference}"
                                          " (resume with the generator_config it was trained with)")
        trainer = held.get("trainer", {})
        if trainer.get("epoch_length") and engine.state.max_epochs is not None:
            epoch = trainer["iteration"] // trainer["epoch_length"]
            if epoch >= engine.state.max_epochs:
                raise CheckpointError(f"{self.load_path}: the state is at epoch {epoch}, and --epochs "
                                      f"{engine.state.max_epochs} leaves nothing to train (give more than {epoch})")


class TrainingStateSaver(CheckpointSaver):
    """MONAI's ``CheckpointSaver`` of the training state every epoch, whose ``n_saved`` also counts the states an
    earlier session left in ``save_dir``, up to the epoch this run resumed from.

    MONAI's saver deletes only the files it wrote in its own process, so each resumed session left its predecessor's
    last ``checkpoint_epoch=N.pt`` behind for good. Now the folder holds what an uninterrupted run would: the newest
    ``n_saved`` states. States past the resume point (another branch's, when a run resumes from an earlier epoch into
    the same folder) are left as they are; the run overwrites them if it gets there.

    With ``fresh`` (a run that resumes from nothing), a ``save_dir`` that holds an earlier run's states stops the run in
    one line as the saver is attached: that run's states would be overwritten epoch by epoch, its ``last.pt`` at the
    end, and nothing said.
    """

    def __init__(self, save_dir: str, save_dict: dict, *args: Any, fresh: bool = False, **kwargs: Any) -> None:
        super().__init__(save_dir, save_dict, *args, **kwargs)
        self.fresh = fresh

    def attach(self, engine: Engine) -> None:
        if self.fresh:
            self._refuse_earlier_states()
        super().attach(engine)
        # At the first epoch: the state loader restores the resume point at STARTED, after this saver's handlers.
        engine.add_event_handler(Events.EPOCH_STARTED, self._count_earlier)

    def _refuse_earlier_states(self) -> None:
        folder = Path(self.save_dir)
        final = folder / self._final_filename if self._final_filename else None
        earlier = [final] if final is not None and final.is_file() else [
            folder / name for _, name in _epoch_states(folder, up_to=sys.maxsize)[-1:]]
        if earlier:
            raise CheckpointError(f"{earlier[0]}: an earlier training's state is in this run's folder: resume it "
                                  "(--resume_from that file) or train into another --output_dir; a new run would "
                                  "overwrite it")

    def _count_earlier(self, engine: Engine) -> None:
        engine.remove_event_handler(self._count_earlier, Events.EPOCH_STARTED)
        checkpoint = self._interval_checkpoint
        if checkpoint is None or checkpoint.n_saved is None:
            return
        earlier = _epoch_states(Path(self.save_dir), up_to=engine.state.epoch - 1)
        stale = earlier[: max(len(earlier) - checkpoint.n_saved, 0)]
        for _, name in stale:
            checkpoint.save_handler.remove(name)
        checkpoint.load_state_dict({"_saved": earlier[len(stale):]})


def keep_configured(optimizer: Optimizer, configured: Sequence[Mapping[str, Any]], name: str = "optimizer") -> None:
    """After a state is loaded: the configured settings, and moments laid out as their parameters.

    ``Optimizer.load_state_dict`` takes every group's settings from the saved groups: a run resumed with ``--lr_g``
    stepped at the saved rate while its history and MLflow recorded the new one, and ``fused`` and ``foreach``
    came from the state. ``configured`` holds each group's settings as the config made them; a changed
    hyper-parameter is logged. Each saved moment keeps its strides: fused Adam walks a parameter and its moments as
    flat memory, so moments saved from contiguous weights (a state written before the networks went channels-last)
    would update the wrong elements.
    """
    for group, settings in zip(optimizer.param_groups, configured):
        for key in _HYPERPARAMETERS:
            if key in settings and _plain(group.get(key)) != _plain(settings[key]):
                logger.info("%s: %s %s in the training state, %s configured: the run uses %s", name, key,
                            group.get(key), settings[key], settings[key])
        group.update(settings)
        for param in group["params"]:
            state = optimizer.state.get(param, {})
            for moment, value in state.items():
                if torch.is_tensor(value) and value.shape == param.shape and value.stride() != param.stride():
                    state[moment] = torch.empty_like(param, dtype=value.dtype).copy_(value)


def _plain(value: Any) -> Any:
    """A setting as compared: betas configured as a list equal the same betas saved as a tuple."""
    return tuple(value) if isinstance(value, (list, tuple)) else value


def _parameter_difference(saved: Mapping[str, Any], configured: Mapping[str, torch.Tensor]) -> str | None:
    """The first parameter of a saved state dict that the configured module lacks, or holds in another shape."""
    for name, tensor in configured.items():
        if name not in saved:
            return f"{name} is not in the file"
        if tuple(saved[name].shape) != tuple(tensor.shape):
            return f"{name} is {tuple(saved[name].shape)} there, {tuple(tensor.shape)} configured"
    extra = next((name for name in saved if name not in configured), None)
    return None if extra is None else f"{extra} is in the file, not in the configured network"


def _epoch_states(folder: Path, up_to: int) -> list[tuple[int, str]]:
    """``(epoch, file name)`` of the per-epoch training states in ``folder`` up to epoch ``up_to``, oldest first."""
    names = [path.name for path in folder.iterdir()] if folder.is_dir() else []
    return sorted((int(match[1]), match[0]) for match in map(_EPOCH_STATE.fullmatch, names)
                  if match and int(match[1]) <= up_to)
