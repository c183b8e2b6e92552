"""The main job on the embedded default data, end to end, as the README's first command runs it.

Makes the phantom study (once), discovers it like any DICOM folder, runs the data path (load,
SUV, PET onto the CT grid, windows), fuses every axial slice with the model (or a baseline when no
trained checkpoint is present), writes the fused volumes as NIfTI and prints what happened.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from pipeline.batch.scoring import StudyScorer
from pipeline.errors import InputError
from pipeline.fusion.selection import build_fusers, default_method
from pipeline.fusion.streaming import FusedStudy, fuse_study
from pipeline.fusion.writers import NiftiSink
from pipeline.io.atomic import output_folder
from pipeline.io.discovery import discover_studies
from pipeline.phantom import make_phantom
from pipeline.transforms.data_path import DEFAULT_WINDOWS
from pipeline.transforms.windowing import check_windows


def _phantom(folder: Path, progress: bool) -> Path:
    """The phantom study folder, made on first use (its truth.json is written last)."""
    if not (folder / "truth.json").is_file():
        make_phantom(folder, progress=progress)
    return folder


def _metric_table(scorer: StudyScorer) -> list[str]:
    """Mean fusion metrics over the body slices, one line per fused volume."""
    return [f"  {name:<24} " + "  ".join(f"{metric} {value:.3f}" for metric, value in scores.items() if value is not None)
            for name, scores in scorer.scores.items()]


def run_demo(out_dir: Path, windows: Sequence[str] = DEFAULT_WINDOWS, method: str | None = None,
             progress: bool = True) -> FusedStudy:
    """Phantom -> discovery -> data path -> fusion -> NIfTI; prints a summary and returns the result.

    The windows, the method and the output folders are checked first, so a bad one leaves no phantom behind.
    """
    start = time.perf_counter()
    windows = check_windows(windows)
    chosen = method or default_method()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    fusers = build_fusers([chosen], device=device)
    fused_dir = output_folder(output_folder(out_dir) / "fused")
    study_dir = _phantom(out_dir / "phantom", progress)
    found = discover_studies(study_dir / "dicom")
    if not found.pairs:
        raise InputError(f"{study_dir}: the phantom study was not found by discovery ({found.failures})")
    pair = found.pairs[0]
    result = fuse_study(pair, fusers, windows, device=device, progress=progress)
    volumes, scorer = NiftiSink(result, fused_dir / pair.study_key), StudyScorer(result, max_slices=0)
    result.stream([volumes, scorer])

    truth = json.loads((study_dir / "truth.json").read_text())
    ct, pet = result.data["ct"], result.data["pet"]
    spacing = [float(s) for s in torch.linalg.norm(ct.affine[:3, :3], dim=0)]
    lines = [
        f"study {pair.study_key}: CT {pair.ct.n_slices} slices, PET {pair.pet.n_slices} slices "
        f"(found in {study_dir / 'dicom'})",
        f"data path: CT grid {tuple(ct.shape[1:])} at {', '.join(f'{s:.2f}' for s in spacing)} mm; "
        f"PET resampled onto it; SUVmax {float(pet.max()):.2f} "
        f"(designed tumour SUVmax {truth['tumour']['expected_image_suvmax']:.2f}); "
        + ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in result.timings.items() if stage != "fuse"),
        f"fusion: {chosen} on {device}, windows {', '.join(windows)}; {result.timings['fuse']:.1f} s",
        "metrics (mean over body slices):",
        *_metric_table(scorer),
        "written:",
        *(f"  {path}" for path in volumes.paths),
        f"done in {time.perf_counter() - start:.1f} s",
    ]
    print("\n".join(lines))
    return result
