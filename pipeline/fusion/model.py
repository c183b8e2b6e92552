"""The trained DCIF-GAN generator as a fuser: a network with trained weights, never run untrained.

A checkpoint is a ``torch.save`` of ``{"model": state dict, "card": facts}`` (what training's
``CheckpointSaver`` writes, and what MONAI's ``CheckpointLoader(load_dict={"model": net})`` reads),
or of a bare state dict. The card says how the model was trained: the ``network`` hyper-parameters,
the CT ``windows`` and the SUV ceiling ``suv_max``; a network or inputs that differ are refused.
It is read with ``weights_only=True``, so a checkpoint cannot run code.

A ``.ts`` file is a TorchScript export of the generator (MONAI's ``ckpt_export``, see the bundle's
README): it holds its own network, so it needs none built, and runs the TorchScript program it holds
(no Python). ``ckpt_export`` stores the bundle's ``metadata.json`` in the file, and the ``card`` there
(windows and SUV ceiling) is checked as a checkpoint's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from monai.data import load_net_with_metadata
from torch import nn

from pipeline.errors import CheckpointError, torch_file_problem
from pipeline.fusion.registry import Fuser, available_fusers, register_fuser
from pipeline.networks import DCIFGenerator

_NAME = "dcif_gan"
MODEL_OUTPUTS = ("fused", "f_ct", "f_pet")
TORCHSCRIPT_SUFFIX = ".ts"


def _require_file(path: str | Path) -> None:
    """A missing checkpoint is a :class:`CheckpointError` that points to the baselines."""
    if not Path(path).is_file():
        baselines = ", ".join(name for name in available_fusers() if name != _NAME)
        raise CheckpointError(
            f"no {_NAME} checkpoint found at {path}; fuse with a baseline instead, e.g. --method laplacian "
            f"(evaluate: --methods \"['laplacian']\"; available: {baselines})"
        )


def _read_checkpoint(path: str | Path) -> Mapping:
    """The checkpoint's top-level dict."""
    _require_file(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several unrelated types for unreadable files
        problem = torch_file_problem(path, error, "PyTorch checkpoint")
        raise CheckpointError(f"cannot read checkpoint {path}: {problem}") from error
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(f"checkpoint {path} holds a {type(checkpoint).__name__}, not a state dict")
    return checkpoint


def _read_torchscript(path: str | Path) -> tuple[nn.Module, dict]:
    """The network of a TorchScript export and the card in its ``metadata.json`` (empty without one)."""
    _require_file(path)
    try:
        network, metadata, _ = load_net_with_metadata(str(path), map_location="cpu")
    except Exception as error:  # torch raises several unrelated types for unreadable files
        problem = torch_file_problem(path, error, "TorchScript")
        raise CheckpointError(f"cannot read TorchScript model {path}: {problem}") from error
    return network, dict(metadata.get("card") or {})


def _check_architecture(network: nn.Module, card: Mapping, path: str | Path) -> None:
    """Hyper-parameters that leave the weights' shapes alone (heads, window) must match the card's too."""
    trained = card.get("network") or {}
    built = getattr(network, "hyper_parameters", {})
    differ = sorted(key for key in trained.keys() & built.keys() if _plain(trained[key]) != _plain(built[key]))
    if differ:
        raise CheckpointError(f"checkpoint {path} was trained as " + ", ".join(f"{k}={_plain(trained[k])}" for k in differ)
                              + ", the network is built with " + ", ".join(f"{k}={_plain(built[k])}" for k in differ))


def _plain(value: object) -> object:
    """Tuples and lists compare equal (a config file has no tuples)."""
    return list(value) if isinstance(value, (list, tuple)) else value


def _load_weights(network: nn.Module, state: Mapping, path: str | Path) -> None:
    """Load ``state`` strictly, turning torch's multi-line mismatch report into one line."""
    name = type(network).__name__
    try:
        result = network.load_state_dict(state, strict=False)
    except RuntimeError as error:
        raise CheckpointError(f"checkpoint {path} does not match {name}: parameter shapes differ") from error
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"checkpoint {path} does not match {name}: {len(result.missing_keys)} missing and "
            f"{len(result.unexpected_keys)} unexpected parameters, e.g. "
            f"{(result.missing_keys or result.unexpected_keys)[0]!r}"
        )


@register_fuser(_NAME)
class ModelFuser(Fuser):
    """Fuse with a generator whose ``forward`` maps (B, 2, H, W) = [CT, PET] to the fused (B, 1, H, W) (the project's
    :class:`~pipeline.networks.DCIFGenerator` also maps (B, W + 1, H, W) = [W CT windows, PET] to (B, W, H, W)).

    ``network`` with ``checkpoint``: load the checkpoint's weights into it (the bundle's
    ``network_def``, see :func:`pipeline.fusion.selection.build_fusers`). ``network`` alone: use it as
    is (a generator already trained in this process). A ``.ts`` checkpoint brings its own network,
    so ``network`` is then not used. ``device`` is where the network runs; ``None`` follows the
    inputs. ``output`` picks the fused image F (default) or one generator's pre-fused image:
    ``f_ct`` (G1) or ``f_pet`` (G2).
    """

    def __init__(
        self,
        network: nn.Module | None = None,
        checkpoint: str | Path | None = None,
        device: str | torch.device | None = None,
        output: str = "fused",
    ) -> None:
        if output not in MODEL_OUTPUTS:
            raise ValueError(f"output must be one of {MODEL_OUTPUTS}, got {output!r}")
        self.card: dict = {}
        if checkpoint is not None and Path(checkpoint).suffix == TORCHSCRIPT_SUFFIX:
            network, self.card = _read_torchscript(checkpoint)
        elif network is None:
            raise ValueError(f"ModelFuser needs a network, or a TorchScript ({TORCHSCRIPT_SUFFIX}) checkpoint")
        elif checkpoint is not None:
            saved = _read_checkpoint(checkpoint)
            self.card = dict(saved.get("card") or {})
            _check_architecture(network, self.card, checkpoint)
            _load_weights(network, saved.get("model", saved), checkpoint)
        self.checkpoint = checkpoint
        self.network = network.eval()
        self.device = None if device is None else torch.device(device)
        self.output = output

    def check_inputs(self, windows: Sequence[str], suv_max: float) -> None:
        """The inputs must be scaled as in training: the card's SUV ceiling and CT windows, when it names them."""
        trained_ceiling = self.card.get("suv_max")
        if trained_ceiling is not None and not math.isclose(float(trained_ceiling), float(suv_max)):
            raise CheckpointError(
                f"checkpoint {self.checkpoint} was trained with PET scaled at SUV ceiling {float(trained_ceiling):g}, "
                f"this run scales it at {float(suv_max):g}: fuse with SUV ceiling {float(trained_ceiling):g} "
                f"(or a model trained at {float(suv_max):g})"
            )
        trained_windows = self.card.get("windows")
        unknown = [window for window in windows if trained_windows and window not in trained_windows]
        if unknown:
            raise CheckpointError(f"checkpoint {self.checkpoint} was trained on the CT windows "
                                  f"{', '.join(trained_windows)}, not {', '.join(unknown)}")

    def fuse_windows(self, ct: torch.Tensor, pet: torch.Tensor) -> torch.Tensor:
        """Every CT window in one forward where the network is the project's generator, which extracts the PET's
        features once for all of them (two windows: 1.1x faster at 512 x 512); a TorchScript export (which may
        predate that) and any other network, a window at a time."""
        if isinstance(self.network, DCIFGenerator):
            return self.fuse(ct, pet)
        return super().fuse_windows(ct, pet)

    def fuse(self, ct: torch.Tensor, pet: torch.Tensor) -> torch.Tensor:
        device = self.device or ct.device
        dtype = next((p.dtype for p in self.network.parameters()), ct.dtype)
        self.network.to(device)
        ct, pet = (image.to(device=device, dtype=dtype) for image in (ct, pet))
        with torch.inference_mode():
            if self.output == "fused":
                return self.network(torch.cat([ct, pet], dim=1))
            return self.network.streams(ct, pet)[MODEL_OUTPUTS.index(self.output) - 1]
