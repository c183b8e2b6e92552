"""A PNG a person opens to see at a glance whether a study fused sensibly.

A few axial slices, one per row: the windowed CT | the PET in colour on the CT | each fused image, under a band
naming each column (which window, which method), so the picture needs no README to read. The slices spread over the
body and always include the hottest PET slice, where a lesion is most likely to be, so a glance shows both the anatomy
and the uptake that matters.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pipeline.io.atomic import atomic_write
from pipeline.transforms.slicing import spread_slices
from pipeline.visualization.panels import ArrayLike, joined, labelled, pet_overlay, to_uint8

DEFAULT_PREVIEW_SLICES = 3
_GAP = 4  # white pixels between tiles


def preview_slices(pet: torch.Tensor, candidates: Sequence[int], count: int = DEFAULT_PREVIEW_SLICES) -> list[int]:
    """``count`` slices of ``candidates`` (e.g. the body slices): evenly spread plus the hottest in ``pet``.

    ``pet`` is ``(1, X, Y, Z)``; with no candidates every slice is one.
    """
    candidates = list(candidates) or list(range(pet.shape[-1]))
    peaks = pet[0].amax(dim=(0, 1))  # one pass over the volume: slice by slice is strided and slow
    return with_hottest(spread_slices(candidates, count), max(candidates, key=lambda z: float(peaks[z])))


def with_hottest(chosen: Sequence[int], hottest: int) -> list[int]:
    """``chosen`` with ``hottest`` in place of the slice nearest to it (unless it is there already), sorted."""
    chosen = list(chosen)
    if hottest not in chosen:
        chosen[min(range(len(chosen)), key=lambda i: abs(chosen[i] - hottest))] = hottest
    return sorted(chosen)


def render_preview(ct: torch.Tensor, pet: torch.Tensor, fused: Sequence[torch.Tensor],
                   slices: Sequence[int], affine: ArrayLike | None = None,
                   labels: Sequence[str] | None = None) -> np.ndarray:
    """RGB picture: one row per slice of CT | PET overlay | each fused volume (all ``(1, X, Y, Z)`` in [0, 1]),
    tiles laid out by the volumes' ``affine`` (see :func:`~pipeline.visualization.panels.display_orientation`), under
    a band naming the columns where ``labels`` (one per column) are given."""
    rows = [[to_uint8(ct[0, ..., z], affine), pet_overlay(ct[0, ..., z], pet[0, ..., z], affine=affine),
             *(to_uint8(volume[0, ..., z], affine) for volume in fused)] for z in slices]
    picture = joined([joined(row, axis=1, gap=_GAP) for row in rows], axis=0, gap=_GAP)
    return picture if labels is None else labelled(picture, labels, rows[0][0].shape[1], _GAP)


def write_preview(path: str | os.PathLike[str], ct: torch.Tensor, pet: torch.Tensor,
                  fused: Sequence[torch.Tensor], slices: Sequence[int] | None = None,
                  affine: ArrayLike | None = None, labels: Sequence[str] | None = None) -> Path:
    """Write :func:`render_preview` as a PNG, atomically; ``slices`` default to :func:`preview_slices`."""
    path = Path(path)
    chosen = preview_slices(pet, range(pet.shape[-1])) if slices is None else slices
    picture = render_preview(ct, pet, fused, chosen, affine, labels)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as temporary:
        Image.fromarray(picture).save(temporary, format="PNG")
    return path
