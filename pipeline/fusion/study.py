"""Fuse one PET/CT study end to end: the step the CLI, the batch job and the deploy app share.

Preprocessing (:func:`pipeline.transforms.study.study_preprocessing`) then slice-by-slice fusion
(:func:`pipeline.fusion.volume.fuse_volume`), returning each fused volume on the CT's geometry.
The bundle's inference workflow runs the same two pieces inside a MONAI evaluator.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from monai.data import MetaTensor
from pydicom.dataset import Dataset

from pipeline.fusion.registry import Fuser
from pipeline.fusion.volume import FusionNetwork, fuse_volume
from pipeline.io.derived_series import (
    COLOUR_SERIES_OFFSET,
    FUSED_SERIES_NUMBER,
    Provenance,
    colour_folder_name,
    dicom_folder_name,
    write_colour_series,
    write_fused_series,
)
from pipeline.io.nifti import save_volume
from pipeline.io.study import StudySource
from pipeline.provenance import BASELINE_VERSION, fuser_version
from pipeline.transforms.study import DEFAULT_WINDOWS, study_preprocessing
from pipeline.transforms.windowing import DEFAULT_SUV_MAX
from pipeline.visualization.colour import colour_fusion


def fused_filename(window: str, method: str) -> str:
    """File name of one fused volume: method and window, nothing from the patient."""
    return f"fused_{method}_{window}.nii.gz"


# Preprocessing transforms by the stage a report names them with; the rest is windowing.
_STAGES = {"LoadStudyd": "load", "PETToSUVd": "suv", "PETCoveraged": "resample", "ResampleToReferenced": "resample"}


@dataclass
class FusedStudy:
    """A fused study: the preprocessed inputs, one volume per ``(window, method)``, and what made them.

    ``versions`` maps each method to its :func:`~pipeline.provenance.fuser_version`.
    """

    data: dict[str, Any]
    fused: dict[tuple[str, str], MetaTensor]
    timings: dict[str, float] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    suv_max: float = DEFAULT_SUV_MAX

    @property
    def study_key(self) -> str | None:
        return self.data.get("study_key")

    def save_nifti(self, folder: str | Path) -> list[Path]:
        """Write every fused volume into ``folder`` (atomically, one file per window and method)."""
        return [save_volume(Path(folder) / fused_filename(window, method), volume)
                for (window, method), volume in self.fused.items()]

    def save_dicom(self, ct_headers: Sequence[Dataset], pet_headers: Sequence[Dataset], folder: str | Path,
                   colour: bool = True) -> list[Path]:
        """Write every fused volume as a derived DICOM series in the CT's study, and its colour rendering.

        Headers: the source CT and PET slices, any order. One sub-folder per window and method
        (``dicom_*``, and ``colour_*`` with ``colour``), series numbers from ``FUSED_SERIES_NUMBER`` up;
        every series gets the same fusion date and time.
        """
        created = datetime.now().astimezone()
        pet = self.data["image"][-1:]
        written = []
        for number, ((window, method), volume) in enumerate(self.fused.items(), start=FUSED_SERIES_NUMBER):
            provenance = Provenance(method, window, self.versions.get(method, BASELINE_VERSION), self.suv_max,
                                    created=created)
            written.append(write_fused_series(volume, ct_headers, pet_headers,
                                              Path(folder) / dicom_folder_name(method, window), provenance, number))
            if colour:
                written.append(write_colour_series(colour_fusion(volume, pet), ct_headers, pet_headers,
                                                   Path(folder) / colour_folder_name(method, window), provenance,
                                                   number + COLOUR_SERIES_OFFSET))
        return written


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
    """Preprocess ``study`` and fuse every window with every fuser, timing each stage.

    ``timings`` holds seconds per stage: ``load``, ``suv``, ``resample``, ``window`` (windows, PET
    scaling and stacking) and ``fuse``.
    """
    timings: dict[str, float] = {}
    data: Any = study
    for transform in study_preprocessing(windows, suv_max, pet_factor=pet_factor).transforms:
        start = time.perf_counter()
        data = transform(data)
        stage = _STAGES.get(type(transform).__name__, "window")
        timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - start
    start = time.perf_counter()
    network = FusionNetwork(fusers, windows, suv_max)
    stacked = fuse_volume(network, data["image"], device=device, sw_batch_size=sw_batch_size, progress=progress)
    timings["fuse"] = time.perf_counter() - start
    if "pet_slices" in data:  # CT slices the PET does not cover are blank, never a "fusion" of CT alone
        with torch.inference_mode():  # fuse_volume's output is an inference tensor
            stacked[..., ~data["pet_slices"].to(stacked.device)] = 0.0
    reference = data["ct"]
    fused = {}
    for channel, name in enumerate(network.channel_names):
        window, method = name.split("/")
        meta = {key: value for key, value in reference.meta.items() if key != "affine"}
        meta.update(modality="fused", window=window, method=method)
        fused[(window, method)] = MetaTensor(stacked[channel : channel + 1], affine=reference.affine, meta=meta)
    versions = {name: fuser_version(fuser) for name, fuser in fusers.items()}
    return FusedStudy(data=data, fused=fused, timings=timings, versions=versions, suv_max=suv_max)
