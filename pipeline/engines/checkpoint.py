"""What a checkpoint carries besides weights: the card that says how the model was trained.

MONAI's ``CheckpointSaver`` stores ``state_dict()`` of each object it is given. Handing it the
training facts (network hyper-parameters, windows, SUV ceiling, data) as a :class:`SavedDict` under
``card`` gives exactly the layout :class:`pipeline.fusion.ModelFuser` reads back and checks:
``{"model": weights, "card": facts}``. A resumable training state (:func:`training_state`) adds the
discriminators, both optimizers, the trainer and the best validation score so far, and loads into the optimizers
as configured; :class:`TrainingStateLoader` also resumes a state written before it held the score.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine
from monai.handlers import CheckpointLoader, CheckpointSaver
from torch.optim import Optimizer

logger = logging.getLogger(__name__)

# Optimizer settings the run's config decides, whatever a loaded state says: the update's hyper-parameters, and the
# implementation. Only the moments (each parameter's state) come from the state.
_HYPERPARAMETERS = ("lr", "betas", "eps", "weight_decay")
_IMPLEMENTATION = ("fused", "foreach")
_CONFIGURED = _HYPERPARAMETERS + _IMPLEMENTATION


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


class BestScore:
    """The validator's best key-metric score and its epoch, as a training state keeps them.

    The best model's ``CheckpointSaver`` compares a score with those it saved in its own process, so a resumed run's
    first validation would replace the best model (``best_model``, the saver's file) whatever its score; restored
    here, it must beat the run's best while that model is on disk.
    """

    def __init__(self, validator: Engine, saver: CheckpointSaver, best_model: str | os.PathLike[str]) -> None:
        self.validator = validator
        self.saver = saver
        self.best_model = Path(best_model)

    def state_dict(self) -> dict[str, float]:
        return {"best_metric": float(self.validator.state.best_metric),
                "best_metric_epoch": int(self.validator.state.best_metric_epoch)}

    def load_state_dict(self, state: Mapping[str, float]) -> None:
        self.validator.state.best_metric = state["best_metric"]
        self.validator.state.best_metric_epoch = state["best_metric_epoch"]
        if state["best_metric_epoch"] >= 0 and self.best_model.is_file():  # the saver replaces it when beaten
            self.saver.load_state_dict({"_saved": [(state["best_metric"], self.best_model.name)]})


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
    held its best score: the score then starts afresh, as it did, with a warning."""

    ADDED_LATER = ("best",)

    def __call__(self, engine: Engine) -> None:
        held = torch.load(self.load_path, map_location="cpu", weights_only=True).keys()
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
