"""What a checkpoint carries besides weights: the card that says how the model was trained.

MONAI's ``CheckpointSaver`` stores ``state_dict()`` of each object it is given. Handing it the
training facts (network hyper-parameters, windows, SUV ceiling, data) as a :class:`SavedDict` under
``card`` gives exactly the layout :class:`pipeline.fusion.ModelFuser` reads back and checks:
``{"model": weights, "card": facts}``. A resumable training state (:func:`training_state`) adds the
discriminators, both optimizers and the trainer, and loads into the optimizers as configured.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch.optim import Optimizer

# Optimizer settings that choose an implementation, not the update: the configured ones outlive a loaded state.
_IMPLEMENTATION = ("fused", "foreach")


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


def training_state(gan: Any, g_optimizer: Any, d_optimizer: Any, trainer: Any) -> dict[str, Any]:
    """What a resumable training checkpoint holds, one dict for its saver and its loader alike.

    ``model`` is the generator under the key the shipped ``model.pt`` uses, so either file loads
    the weights the same way.
    """
    for optimizer in (g_optimizer, d_optimizer):
        optimizer.register_load_state_dict_post_hook(keep_configured)
    return {"model": gan.generator, "d1": gan.d1, "d2": gan.d2,
            "g_optimizer": g_optimizer, "d_optimizer": d_optimizer, "trainer": trainer}


def keep_configured(optimizer: Optimizer) -> None:
    """After a state is loaded: the configured implementation, and moments laid out as their parameters.

    ``Optimizer.load_state_dict`` takes ``fused`` and ``foreach`` from the saved groups, and each saved moment
    keeps its strides. Fused Adam walks a parameter and its moments as flat memory, so moments saved from
    contiguous weights (a state written before the networks went channels-last) would update the wrong elements.
    """
    for group in optimizer.param_groups:
        group.update({key: optimizer.defaults[key] for key in _IMPLEMENTATION if key in optimizer.defaults})
        for param in group["params"]:
            state = optimizer.state.get(param, {})
            for name, value in state.items():
                if torch.is_tensor(value) and value.shape == param.shape and value.stride() != param.stride():
                    state[name] = torch.empty_like(param, dtype=value.dtype).copy_(value)
