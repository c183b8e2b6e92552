"""What a checkpoint carries besides weights: the card that says how the model was trained.

MONAI's ``CheckpointSaver`` stores ``state_dict()`` of each object it is given. Handing it the
training facts (network hyper-parameters, windows, SUV ceiling, data) as a :class:`SavedDict` under
``card`` gives exactly the layout :class:`pipeline.fusion.ModelFuser` reads back and checks:
``{"model": weights, "card": facts}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class SavedDict:
    """Plain values that ignite's ``Checkpoint`` saves and restores like a module's state.

    Not a ``Mapping`` on purpose: ignite walks mappings looking for objects with ``state_dict``.
    """

    def __init__(self, **values: Any) -> None:
        self.values = dict(values)

    def state_dict(self) -> dict[str, Any]:
        return dict(self.values)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.values = dict(state)
