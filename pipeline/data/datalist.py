"""Datalists: the studies a workflow runs on, whatever the user pointed at.

A datalist is a list of dicts with ``ct`` and ``pet`` sources (DICOM series, folders or NIfTI
files, as :class:`pipeline.transforms.LoadStudyd` accepts), a ``study_key`` (a hash, never a patient
identifier) and the study's ``study_index`` in the list. Splits are by study, never by slice,
so no slice of a validation study is seen in training.
"""

from __future__ import annotations

import json
import os
import pickle
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from pipeline.errors import InputError
from pipeline.io.discovery import discover_studies, find_nifti_pair
from pipeline.io.headers import study_key
from pipeline.io.study_source import study_sources

Datalist = list[dict[str, Any]]
# Small enough for CPU training from a fresh clone, with the whole thorax in view (384 mm).
DEFAULT_PHANTOM_SIZE = (128, 128, 32)
DEFAULT_PHANTOM_SPACING = (3.0, 3.0, 4.0)


def _indexed(items: Sequence[dict[str, Any]]) -> Datalist:
    """Number the studies and give each a non-identifying key."""
    indexed = []
    for index, item in enumerate(items):
        key = item.get("study_key") or study_key(f"{item['ct']}|{item['pet']}")
        indexed.append({**item, "study_key": key, "study_index": index})
    return indexed


def phantom_datalist(
    root: str | os.PathLike[str],
    n_studies: int = 2,
    size: Sequence[int] = DEFAULT_PHANTOM_SIZE,
    spacing: Sequence[float] = DEFAULT_PHANTOM_SPACING,
    first_seed: int = 0,
    **options: Any,
) -> Datalist:
    """Phantom studies under ``root`` (seeds ``first_seed``...), made on first use so a fresh clone runs.

    ``options`` go to :func:`pipeline.phantom.make_phantom` (tumour size and uptake, noise, PET
    grid...). Each item's ``truth`` is the phantom's ``truth.json``, the ground truth of its tumour.
    """
    from pipeline.phantom import make_phantom

    items = []
    for seed in range(first_seed, first_seed + n_studies):
        folder = Path(root) / f"seed_{seed:03d}"
        if not (folder / "truth.json").is_file():
            make_phantom(folder, ct_shape=tuple(size), ct_spacing=tuple(spacing), seed=seed, write_nifti=False,
                         **options)
        # Discovered like any DICOM input, so a study has the same key whichever way it is named.
        items.extend({**item, "truth": str(folder / "truth.json")} for item in _from_folder(folder / "dicom"))
    return _indexed(items)


# The datalist fields that are paths, relative to the datalist file.
PATH_KEYS = ("ct", "pet", "lesion_mask", "truth")


def _from_json(path: Path) -> list[dict[str, Any]]:
    """``[{"ct": ..., "pet": ...}, ...]`` (or ``{"studies": [...]}``); relative paths are from the file.

    An item may name its tumour contour, ``lesion_mask`` (an RTSTRUCT file or its folder), which the
    evaluation's lesion report measures instead of a PET threshold.
    """
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: unreadable datalist ({error})") from None
    items = content.get("studies") if isinstance(content, dict) else content
    if not isinstance(items, list) or not all(isinstance(i, dict) and {"ct", "pet"} <= i.keys() for i in items):
        raise InputError(f"{path}: a datalist must be a list of objects with 'ct' and 'pet' entries")
    return [{**item, **{k: str((path.parent / item[k]).resolve()) for k in PATH_KEYS if k in item}} for item in items]


def _from_folder(folder: Path) -> list[dict[str, Any]]:
    """A NIfTI pair folder, or a tree of DICOM studies (each PET/CT pair discovery finds)."""
    pair = find_nifti_pair(folder)
    if pair is not None:
        return [study_sources(pair)]
    found = discover_studies(folder)
    if not found.pairs:
        reasons = "; ".join(str(failure) for failure in found.failures[:3]) or "no PET/CT pair"
        raise InputError(f"{folder}: no fusable PET/CT study found ({reasons})")
    return [study_sources(pair) for pair in found.pairs]


def load_datalist(source: str | os.PathLike[str] | Sequence[Any]) -> Datalist:
    """Resolve a datalist from a JSON file, a folder or a list of study dicts."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_file():
            return _indexed(_from_json(path))
        if path.is_dir():
            return _indexed(_from_folder(path))
        raise InputError(f"{path}: no such file or folder")
    return _indexed([study_sources(item) for item in source])


SPLIT_DEFAULTS = {"seed": 0, "val_fraction": 0.25, "phantom_studies": 4}
"""How training draws its validation studies unless told otherwise (train.json's defaults): the generated phantom
studies' count, the fraction held out and the shuffle's seed."""


def training_split(checkpoint: str | os.PathLike[str] | None, **given: Any) -> dict[str, Any]:
    """The split settings (:data:`SPLIT_DEFAULTS`' keys) a checkpoint's training used, from its card: evaluation holds
    out the studies that training held out, not those its own defaults would draw. Absent from the card (a card
    written before it recorded them) or without a checkpoint (baselines only): the defaults. A setting ``given``
    (not None) wins: a model evaluated on other studies."""
    saved: Any = {}
    if checkpoint is not None and Path(checkpoint).is_file():
        try:
            saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, pickle.UnpicklingError):  # the fuser reports an unreadable checkpoint
            saved = {}
    card = saved.get("card", {}) if isinstance(saved, dict) else {}
    return {key: given[key] if given.get(key) is not None else card.get(key, default)
            for key, default in SPLIT_DEFAULTS.items()}


def split_by_study(datalist: Datalist, val_fraction: float = SPLIT_DEFAULTS["val_fraction"],
                   seed: int = SPLIT_DEFAULTS["seed"]) -> dict[str, Datalist]:
    """Hold out whole studies for validation.

    Studies whose ``split`` field says ``"train"`` or ``"val"`` go there (a curated split, such as
    the real studies of a training cache), and any other ``split`` (``"test"``) to neither; those without one are
    shuffled with ``seed`` and ``val_fraction`` of them held out (at least one, if two or more).
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    fixed = {name: [i for i, item in enumerate(datalist) if item.get("split") == name] for name in ("train", "val")}
    free = [i for i, item in enumerate(datalist) if item.get("split") is None]
    random.Random(seed).shuffle(free)
    n_val = round(len(free) * val_fraction)
    if len(free) >= 2 and val_fraction > 0:
        n_val = min(max(n_val, 1), len(free) - 1)
    chosen = {"train": fixed["train"] + free[n_val:], "val": fixed["val"] + free[:n_val]}
    return {name: [datalist[i] for i in sorted(indices)] for name, indices in chosen.items()}
