"""Fuse whole study volumes slice by slice, with any set of fusers, on the GPU when there is one.

:class:`FusionNetwork` turns fusers into one ``nn.Module`` over the preprocessing's ``image``
(CT windows then PET), so MONAI's ``SliceInferer`` can run it axial slice by axial slice in
batches: the bundle's evaluator and :func:`fuse_volume` (CLI, batch, deploy) share it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from monai.inferers import SliceInferer
from torch import nn

from pipeline.fusion.registry import Fuser


def fused_channels(windows: Sequence[str], methods: Sequence[str]) -> list[tuple[str, str]]:
    """``(window, method)`` of each fused channel, window-major: the one definition of the output layout."""
    return [(window, method) for window in windows for method in methods]


class FusionNetwork(nn.Module):
    """``(B, W + 1, H, W')`` = W CT windows + PET  ->  ``(B, W * M, H, W')``, one channel per (window, fuser).

    :attr:`channels` says which channel is which (:func:`fused_channels`).
    """

    def __init__(self, fusers: Mapping[str, Fuser], windows: Sequence[str], suv_max: float | None = None) -> None:
        super().__init__()
        if not fusers or not windows:
            raise ValueError("FusionNetwork needs at least one fuser and one window")
        if suv_max is not None:  # the inputs' scaling: a model refuses one it was not trained at
            for fuser in fusers.values():
                fuser.check_inputs(windows, suv_max)
        self.fusers = dict(fusers)
        self.windows = list(windows)
        self.suv_max = suv_max  # what the outputs' records say the PET was scaled at
        # Fusers that wrap a network register it, so .to(device) and .eval() reach the weights.
        self.networks = nn.ModuleList(f.network for f in self.fusers.values() if isinstance(getattr(f, "network", None), nn.Module))

    @property
    def channels(self) -> list[tuple[str, str]]:
        return fused_channels(self.windows, self.fusers)

    @property
    def ct_channels(self) -> list[int]:
        """The input channel (CT window) each output channel fuses with the PET: what it is scored against."""
        return [self.windows.index(window) for window, _ in self.channels]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n_windows = len(self.windows)
        if x.shape[1] != n_windows + 1:
            raise ValueError(f"expected {n_windows} CT window channels + 1 PET channel, got {x.shape[1]} channels")
        pet = x[:, n_windows : n_windows + 1]
        fused = [fuser(x[:, :n_windows], pet) for fuser in self.fusers.values()]  # each every window at once
        return torch.cat([method[:, w : w + 1] for w in range(n_windows) for method in fused], dim=1)


def slice_inferer(sw_batch_size: int = 8, progress: bool = False) -> SliceInferer:
    """Whole axial slices (``roi_size`` -1 = full extent), ``sw_batch_size`` slices per forward."""
    return SliceInferer(roi_size=(-1, -1), sw_batch_size=sw_batch_size, spatial_dim=2, progress=progress)


def fuse_volume(
    network: FusionNetwork,
    image: torch.Tensor,
    device: str | torch.device = "cpu",
    sw_batch_size: int = 8,
    progress: bool = False,
) -> torch.Tensor:
    """Fuse a ``(W + 1, X, Y, Z)`` study image; returns ``(W * M, X, Y, Z)`` on the CPU."""
    network = network.to(device).eval()
    with torch.inference_mode():
        fused = slice_inferer(sw_batch_size, progress)(image[None].to(device), network)
    return fused[0].cpu()
