"""Preprocessed studies on disk: each study's network input, computed once and read many times.

A hyper-parameter sweep or an ablation reads the same studies over and over, and may run on a
GPU host that lacks the DICOM stack (SimpleITK alone is a 50 MB wheel). The cache holds exactly
what :func:`pipeline.transforms.data_path.study_preprocessing` hands the network: ``image`` (the CT
windows then the scaled PET, in [0, 1]) with its affine, and ``body_slices``; and, where the datalist
knows the tumour (a ``lesion_mask`` contour or a phantom's ``truth``), ``lesion`` on the same grid,
which the reader hands on as ``label`` so validation measures the lesion a reader would outline. One compressed
``<study_key>.npz`` per study, at 8 bits (the fusion metrics work on the 0-255 scale anyway, see
``fusion_metrics.md``), and a ``datalist.json`` listing them with their ``split`` and ``origin``.
Nothing identifies a patient: files are named by the study key (a hash), and source paths are
not kept.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import MapTransform
from tqdm.auto import tqdm

from pipeline.errors import InputError
from pipeline.io.atomic import atomic_write
from pipeline.transforms.data_path import DEFAULT_WINDOWS, study_preprocessing
from pipeline.transforms.windowing import DEFAULT_SUV_MAX

CACHE_FORMAT = 1
DATALIST_NAME = "datalist.json"
# Datalist fields carried into the cache: where a study goes, and what kind of study it is.
KEPT_FIELDS = ("split", "origin")
_LEVELS = 255


def cache_studies(
    datalist: Sequence[Mapping[str, Any]],
    out_dir: str | os.PathLike[str],
    windows: Sequence[str] = DEFAULT_WINDOWS,
    suv_max: float = DEFAULT_SUV_MAX,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Preprocess every study of ``datalist`` into ``out_dir``; returns the cached datalist.

    An item's ``slice_step`` (default 1) keeps every k-th axial slice, the affine adjusted to
    match: neighbouring slices of a thin-slice CT add little to training but a lot to the cache.
    """
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    preprocess = study_preprocessing(windows, suv_max)
    entries = []
    for item in tqdm(datalist, desc="caching studies", unit="study", disable=not progress):
        data = preprocess(dict(item))
        step = int(item.get("slice_step", 1))
        affine = data["image"].affine.numpy().copy()
        affine[:, 2] *= step
        name = f"{data['study_key']}.npz"
        label = data.get("label")  # the tumour the item's datalist fields name (KnownLesiond)
        with atomic_write(folder / name) as temporary, temporary.open("wb") as file:  # a name would gain ".npz"
            np.savez_compressed(
                file,
                image=np.rint(data["image"].numpy()[..., ::step] * _LEVELS).clip(0, _LEVELS).astype(np.uint8),
                affine=affine,
                body_slices=data["body_slices"].numpy()[::step],
                **({} if label is None else {"lesion": label[0].numpy()[..., ::step] > 0.5}),
            )
        kept = {k: item[k] for k in KEPT_FIELDS if k in item}
        entries.append({"image": name, "study_key": data["study_key"], **kept})
    index = {"format": CACHE_FORMAT, "windows": list(windows), "suv_max": float(suv_max), "studies": entries}
    with atomic_write(folder / DATALIST_NAME) as temporary:
        temporary.write_text(json.dumps(index, indent=2))
    return load_cached_datalist(folder)


def _index(folder: Path) -> dict[str, Any]:
    path = folder / DATALIST_NAME
    try:
        index = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: not a study cache ({error})") from None
    if not isinstance(index, dict) or index.get("format") != CACHE_FORMAT or not isinstance(index.get("studies"), list):
        raise InputError(f"{path}: not a study cache of format {CACHE_FORMAT}")
    if not all(isinstance(entry, dict) and {"image", "study_key"} <= entry.keys() for entry in index["studies"]):
        raise InputError(f"{path}: every cached study needs an 'image' file and a 'study_key'")
    return index


def load_cached_datalist(folder: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The cached studies of ``folder`` as a datalist: ``image`` (absolute path), ``study_key``, ``split``..."""
    root = Path(folder).resolve()
    index = _index(root)
    return [
        {**entry, "image": str(root / entry["image"]), "study_index": i, "windows": index["windows"],
         "suv_max": index["suv_max"]}
        for i, entry in enumerate(index["studies"])
    ]


class LoadCachedStudyd(MapTransform):
    """Read a cached study: ``data[key]`` (an ``.npz`` path) becomes the ``image`` MetaTensor, plus ``body_slices``
    and, where the cache knows the tumour, ``label`` (1, X, Y, Z), its mask on the same grid.

    ``windows`` and ``suv_max`` must be those the cache was made with (the datalist entries say
    which): a model trained on other windows would silently see the wrong inputs.
    """

    def __init__(self, keys: str = "image", windows: Sequence[str] = DEFAULT_WINDOWS,
                 suv_max: float = DEFAULT_SUV_MAX) -> None:
        super().__init__(keys)
        self.windows = list(windows)
        self.suv_max = float(suv_max)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            path = Path(d[key])
            cached = (d.get("windows"), d.get("suv_max"))
            if cached != (self.windows, self.suv_max):
                raise InputError(f"{path}: cached with windows {cached[0]} and SUV ceiling {cached[1]}, "
                                 f"but {self.windows} and {self.suv_max} were asked for")
            try:
                with np.load(path) as arrays:
                    image, affine, body = arrays["image"], arrays["affine"], arrays["body_slices"]
                    lesion = arrays["lesion"] if "lesion" in arrays else None
            except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
                raise InputError(f"{path}: unreadable cached study ({error})") from None
            if image.ndim != 4 or image.shape[0] != len(self.windows) + 1 or body.shape != image.shape[-1:]:
                raise InputError(f"{path}: cached study has shape {image.shape}, expected "
                                 f"({len(self.windows) + 1}, X, Y, Z) with one body flag per slice")
            if lesion is not None and lesion.shape != image.shape[1:]:
                raise InputError(f"{path}: cached lesion has shape {lesion.shape}, the image {image.shape[1:]}")
            d[key] = MetaTensor(torch.from_numpy(image.astype(np.float32) / _LEVELS), affine=torch.from_numpy(affine),
                                meta={"filename_or_obj": str(path)})
            d["body_slices"] = torch.from_numpy(body.astype(bool))
            if lesion is not None:
                d["label"] = MetaTensor(torch.from_numpy(lesion[None].astype(np.float32)), affine=d[key].affine)
        return d
