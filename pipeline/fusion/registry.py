"""The fuser registry: one name per fusion method, so the CLI and the bundle can say ``--method NAME``.

Every method, from pixel averaging to the trained network, is a :class:`Fuser` with one contract:
``fuser(ct, pet)`` takes co-registered float tensors in [0, 1] on any device, W >= 1 CT windows of a
slice (B, W, H, W') and its PET (B, 1, H, W'), and returns each window fused with the PET,
(B, W, H, W'), of the CT's dtype and device, in [0, 1], deterministically. The base class enforces
the contract once, so the methods only implement :meth:`Fuser.fuse` of one window.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

import torch

from pipeline.errors import DcifError


class UnknownFuserError(DcifError, ValueError):
    """A fusion method name that no fuser is registered under."""


class Fuser(ABC):
    """A fusion method: checks the (CT, PET) pair, fuses, returns a [0, 1] image like the CT input."""

    def __call__(self, ct: torch.Tensor, pet: torch.Tensor) -> torch.Tensor:
        if (ct.ndim != 4 or pet.ndim != 4 or ct.shape[1] < 1 or pet.shape[1] != 1 or ct.shape[0] != pet.shape[0]
                or ct.shape[2:] != pet.shape[2:]):
            raise ValueError(
                f"{type(self).__name__} needs CT windows (B, W, H, W') and a PET (B, 1, H, W') of one slice size; "
                f"got {tuple(ct.shape)} and {tuple(pet.shape)}"
            )
        return self.fuse_windows(ct, pet).clamp(0, 1).to(device=ct.device, dtype=ct.dtype)

    def fuse_windows(self, ct: torch.Tensor, pet: torch.Tensor) -> torch.Tensor:
        """Each CT window fused with the PET, (B, W, H, W'): :meth:`fuse` a window at a time. A method whose windows
        share work overrides it (the model extracts the PET's features once for all)."""
        return torch.cat([self.fuse(window, pet) for window in ct.split(1, dim=1)], dim=1)

    def check_inputs(self, windows: Sequence[str], suv_max: float) -> None:
        """Refuse CT windows or a PET scaling the method was not made for (classical methods take any)."""

    @abstractmethod
    def fuse(self, ct: torch.Tensor, pet: torch.Tensor) -> torch.Tensor:
        """The method itself, on a validated pair; the result may be on another device or dtype."""


_FUSERS: dict[str, Callable[..., Fuser]] = {}


def register_fuser(name: str) -> Callable[[type[Fuser]], type[Fuser]]:
    """Class decorator: make a :class:`Fuser` subclass available as ``get_fuser(name, **kwargs)``."""

    def register(fuser_class: type[Fuser]) -> type[Fuser]:
        if name in _FUSERS:
            raise ValueError(f"fuser name {name!r} is already registered to {_FUSERS[name]!r}")
        _FUSERS[name] = fuser_class
        return fuser_class

    return register


def available_fusers() -> list[str]:
    """Registered method names, sorted."""
    return sorted(_FUSERS)


def get_fuser(name: str, **kwargs) -> Fuser:
    """Build the fuser registered as ``name`` with its constructor ``kwargs`` (settings it lacks are refused by name)."""
    if name not in _FUSERS:
        raise UnknownFuserError(f"unknown fusion method {name!r}; available: {', '.join(available_fusers())}")
    settings = inspect.signature(_FUSERS[name]).parameters
    unknown = sorted(set(kwargs) - set(settings))
    if unknown:
        raise UnknownFuserError(f"fusion method {name!r} has no setting {', '.join(map(repr, unknown))}; "
                                f"its settings: {', '.join(settings) or 'none'}")
    return _FUSERS[name](**kwargs)
