"""What a bundle workflow reads: one datalist and its preprocessing, chosen from the same three sources.

Training and evaluation take a study cache (``study_cache``; inference refuses one: it holds no CT to write fused
volumes on), and every workflow a folder or JSON datalist (``input``) or, with neither, phantom studies made on first
use under ``dataset_dir``.
The choice lives here so the configs wire it instead of each spelling it as an expression.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monai.transforms import Transform

from pipeline.data.datalist import Datalist, load_datalist, phantom_datalist
from pipeline.data.study_cache import LoadCachedStudyd, load_cached_datalist
from pipeline.errors import InputError
from pipeline.transforms.data_path import study_preprocessing
from pipeline.wording import counted


def default_dataset_dir() -> str:
    """Where phantom studies are made when no data is named: outside the bundle, so a read-only copy runs.

    ``$MONAI_DATA_DIRECTORY`` (the MONAI tutorials' data folder) when set, else ``~/.cache/dcif_gan``.
    """
    root = os.environ.get("MONAI_DATA_DIRECTORY") or Path.home() / ".cache" / "dcif_gan"
    return str(Path(root) / "dcif_gan_phantom")


def workflow_datalist(
    input: str | os.PathLike[str] | None,  # noqa: A002 - the bundle's documented key
    dataset_dir: str | os.PathLike[str],
    n_studies: int,
    study_cache: str | os.PathLike[str] | None = None,
) -> Datalist:
    """The studies a workflow runs on: the cache, else ``input``, else ``n_studies`` phantoms in ``dataset_dir``."""
    if study_cache is not None:
        return load_cached_datalist(study_cache)
    if input is not None:
        return load_datalist(input)
    return phantom_datalist(dataset_dir, n_studies=n_studies)


KNOWN_ORIGINS = ("phantom", "real")
"""The kinds of study a datalist's ``origin`` names (``tools/build_training_set.py``); any other value counts as
``other``, so no free text of a datalist reaches a card."""


def datalist_description(
    datalist: Datalist,
    input: str | os.PathLike[str] | Sequence[Any] | None = None,  # noqa: A002 - the bundle's documented key
    study_cache: str | os.PathLike[str] | None = None,
) -> str:
    """What a training's studies were, for its card and run parameters (``training_data``), from the same three
    sources as :func:`workflow_datalist`: how many, from which kind of source, and of which origin where the datalist
    says. Never a path or a study's name: hospital exports name their folders by patient."""
    if study_cache is not None:
        source = "a study cache"
    elif input is None:
        return f"{counted(len(datalist), 'phantom study', 'phantom studies')} (generated)"
    elif not isinstance(input, (str, os.PathLike)):
        source = "a datalist in the config"
    else:
        source = "a JSON datalist" if Path(input).is_file() else "an input folder"
    origins = Counter(item.get("origin") if item.get("origin") in KNOWN_ORIGINS else "other"
                      for item in datalist if "origin" in item)
    unlabelled = len(datalist) - sum(origins.values())
    if origins and unlabelled:
        origins["unlabelled"] = unlabelled
    kinds = ", ".join(f"{count} {origin}" for origin, count in sorted(origins.items()))
    return f"{counted(len(datalist), 'study', 'studies')} from {source}" + (f" ({kinds})" if kinds else "")


def workflow_preprocessing(
    windows: Sequence[str],
    suv_max: float,
    study_cache: str | os.PathLike[str] | None = None,
    **pet_overrides: float | str | None,
) -> Transform:
    """A cached study's reader, or the DICOM/NIfTI data path (``pet_overrides``: weight_kg, dose_bq, units), which
    gives the tumour the datalist knows as ``label``, as the cache keeps it.

    A cache holds its studies in SUV already: PET overrides given with one would be ignored, so they are refused.
    """
    if study_cache is not None:
        given = [name for name, value in pet_overrides.items() if value is not None]
        if given:
            raise InputError(f"{study_cache}: a study cache holds SUV already; the PET overrides {', '.join(given)} "
                             "apply to studies read from DICOM or NIfTI (make the cache with them instead)")
        return LoadCachedStudyd(windows=windows, suv_max=suv_max)
    return study_preprocessing(windows, suv_max, **pet_overrides)
