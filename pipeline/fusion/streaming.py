"""Fuse one PET/CT study end to end, slab by slab: the step the CLI, the batch job and the deploy app share.

:func:`fuse_study` loads the study (:func:`pipeline.transforms.data_path.study_loading`);
:meth:`FusedStudy.stream` then resamples the PET onto, windows, fuses and hands out a few axial CT
slices at a time (:func:`pipeline.transforms.data_path.network_input`,
:func:`pipeline.fusion.volume.fuse_volume`) to sinks that write or score them
(:mod:`pipeline.fusion.writers`, :mod:`pipeline.batch.scoring`). Why slabs: a whole-body CT
(512 x 512 x 300, 0.3 GB in float32) held once per window and method costs gigabytes; streamed,
the study costs its CT and its PET on the PET's own grid, and every output is written as it is
made. Fusers work on axial slices, so the result is the same as fusing the whole volume at once.
The bundle's inference workflow runs the same pieces inside a MONAI evaluator.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch
from tqdm import tqdm

from pipeline.fusion.registry import Fuser
from pipeline.fusion.volume import FusionNetwork, fuse_volume
from pipeline.io.study_source import StudySource
from pipeline.provenance import fuser_versions
from pipeline.transforms.data_path import DEFAULT_WINDOWS, network_input, study_loading
from pipeline.transforms.resample import blank_uncovered
from pipeline.transforms.slicing import axial_slab
from pipeline.transforms.windowing import DEFAULT_SUV_MAX, check_windows

# Fused voxels per slab, all channels together (64 MB in float32): 8 slices of 512 x 512 for one
# method in two windows, 1 for five or six; every output channel of a slab is held at once, and
# with the model the slab's buffers sit next to its forward's (0.17 GB at 512 x 512).
SLAB_VOXELS = 16 * 512 * 512
# On the CPU a forward's activations are host memory, and batching whole-body slices gains little
# there: at most this many voxels (one 512 x 512 slice) go through the fusers at once.
CPU_FORWARD_VOXELS = 512 * 512


def fused_filename(window: str, method: str) -> str:
    """File name of one fused volume: method and window, nothing from the patient."""
    return f"fused_{method}_{window}.nii.gz"


# Data-path transforms by the stage a report names them with; the rest is windowing.
_STAGES = {"LoadStudyd": "load", "PETToSUVd": "suv", "PETCoveraged": "resample", "ResampleToReferenced": "resample"}


@dataclass(frozen=True)
class FusedSlab:
    """Axial slices ``start`` to ``start + n`` of a study: the network input and its fusions.

    ``image`` is ``(W + 1, X, Y, n)`` (the CT windows, then the scaled PET); ``fused`` is
    ``(W * M, X, Y, n)`` in the order of :attr:`FusedStudy.names`; slices the PET does not cover
    are 0 there, never a "fusion" of the CT alone.
    """

    start: int
    image: torch.Tensor
    fused: torch.Tensor

    @property
    def stop(self) -> int:
        return self.start + self.image.shape[-1]


class StudySink:
    """Something that consumes a fused study slab by slab, in z order, inside a ``with`` block.

    ``stage`` is the report stage its time counts to. On a clean exit a sink finishes its work
    (closes its files); on an exception it removes what it started.
    """

    stage = "write"

    def __enter__(self) -> StudySink:
        return self

    def add(self, slab: FusedSlab) -> None:
        raise NotImplementedError

    def __exit__(self, *exc: object) -> bool | None:
        return None


@dataclass
class FusedStudy:
    """A loaded study and the fusers to stream it through, slab by slab onto the CT grid.

    ``data`` holds ``ct`` (HU, int16 when they are whole numbers: :mod:`pipeline.io.volume_fill`), ``pet`` (SUV,
    on its own grid), ``pet_slices``, ``body_slices``, and ``ct_headers`` and ``pet_headers`` when the study was read
    from DICOM (see :mod:`pipeline.transforms.data_path`); ``timings`` gathers seconds per report stage.
    """

    data: dict[str, Any]
    network: FusionNetwork
    device: str | torch.device = "cpu"
    sw_batch_size: int = 8
    progress: bool = False
    timings: dict[str, float] = field(default_factory=dict)

    @cached_property
    def versions(self) -> dict[str, str]:
        """Each method's :func:`~pipeline.provenance.fuser_version`, from the network itself, so every door that
        writes a study (the bundle's too, which builds this from its evaluator's network) records the same."""
        return fuser_versions(self.network.fusers)

    @property
    def suv_max(self) -> float:
        """The SUV ceiling the PET is scaled at: the one its network was built for (and checks a model against)."""
        return DEFAULT_SUV_MAX if self.network.suv_max is None else self.network.suv_max

    @property
    def study_key(self) -> str | None:
        return self.data.get("study_key")

    @property
    def windows(self) -> list[str]:
        return self.network.windows

    @property
    def names(self) -> list[tuple[str, str]]:
        """``(window, method)`` of each fused channel, in channel order."""
        return self.network.channels

    @property
    def shape(self) -> tuple[int, int, int]:
        """The CT grid ``(X, Y, Z)`` every fused volume lies on."""
        return tuple(self.data["ct"].shape[1:])

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        """Add the block's seconds to ``timings[stage]``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[stage] = self.timings.get(stage, 0.0) + time.perf_counter() - start

    def slabs(self, size: int | None = None) -> Iterator[FusedSlab]:
        """Resample the PET onto, window and fuse ``size`` axial CT slices at a time (default: :data:`SLAB_VOXELS`).

        Nothing of a slab is kept once the next is asked for: a caller that drops its slab first (as
        :meth:`stream` does) holds one slab at a time.
        """
        n_x, n_y, n_slices = self.shape
        size = size or max(1, SLAB_VOXELS // (n_x * n_y * len(self.names)))
        inputs = network_input(self.windows, self.suv_max).transforms
        batch = self.sw_batch_size
        if torch.device(self.device).type == "cpu":
            batch = max(1, min(batch, CPU_FORWARD_VOXELS // (n_x * n_y)))
        for start in range(0, n_slices, size):
            yield self._fuse_slab(inputs, batch, start, min(start + size, n_slices))

    def _fuse_slab(self, inputs: Sequence, batch: int, start: int, stop: int) -> FusedSlab:
        slab = {"ct": axial_slab(self.data["ct"], start, stop), "pet": self.data["pet"]}
        for transform in inputs:
            with self.timed(_STAGES.get(type(transform).__name__, "window")):
                slab = transform(slab)
        image = slab.pop("image")
        del slab  # its windowed CT and scaled PET are in the image now; free them before the forward
        with self.timed("fuse"):
            fused = blank_uncovered(fuse_volume(self.network, image, device=self.device, sw_batch_size=batch),
                                    self.data["pet_slices"][start:stop])
        return FusedSlab(start, image.as_tensor(), fused)

    def stream(self, sinks: Sequence[StudySink]) -> None:
        """Run every slab through every sink; a sink's files are complete once this returns."""
        with ExitStack() as stack:
            for sink in sinks:
                stack.enter_context(sink)
            bar = tqdm(total=self.shape[-1], unit="slice", desc="fusing", disable=not self.progress)
            stack.callback(bar.close)
            for slab in self.slabs():
                for sink in sinks:
                    with self.timed(sink.stage):
                        sink.add(slab)
                bar.update(slab.stop - slab.start)
                del slab  # before the next slab is made
            closing = time.perf_counter()
        self.timings["write"] = self.timings.get("write", 0.0) + time.perf_counter() - closing


def fuse_study(
    study: StudySource,
    fusers: Mapping[str, Fuser],
    windows: Sequence[str] = DEFAULT_WINDOWS,
    suv_max: float = DEFAULT_SUV_MAX,
    device: str | torch.device = "cpu",
    sw_batch_size: int = 8,
    progress: bool = False,
    pet_factor: float | None = None,
) -> FusedStudy:
    """Load ``study`` for ``fusers`` in every window, timing each stage; stream the result to fuse it.

    ``timings`` holds seconds per stage: ``load``, ``suv``, ``resample``, ``window`` (body flags), then,
    as the study streams, more ``resample`` and ``window`` (windows, PET scaling), ``fuse`` and the
    sinks' stages.
    """
    check_windows(windows)  # unknown windows are refused before anything is read
    network = FusionNetwork(fusers, windows, suv_max)  # and a model a scaling it was not trained at
    timings: dict[str, float] = {}
    data: Any = study
    for transform in study_loading(pet_factor=pet_factor, keep_headers=True).transforms:
        start = time.perf_counter()
        data = transform(data)
        stage = _STAGES.get(type(transform).__name__, "window")
        timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - start
    return FusedStudy(data=data, network=network.to(device).eval(), device=device,
                      sw_batch_size=sw_batch_size, progress=progress, timings=timings)
