"""Training samples: co-registered 2-D (CT window, PET) slice pairs cut from whole studies.

Each study goes through the same preprocessing as inference (:func:`study_preprocessing`), then
every axial slice inside the body becomes one sample per CT window, so both windows are learnt
(the window is the augmentation the paper evaluates separately). Samples are held in memory: the
phantom and the shared studies are small, and random crops are cheap on top of them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from tqdm.auto import tqdm

from pipeline.transforms.data_path import DEFAULT_WINDOWS, study_preprocessing
from pipeline.transforms.slicing import flagged_slices
from pipeline.transforms.windowing import DEFAULT_SUV_MAX


def slice_pairs(
    studies: Sequence[dict[str, Any]],
    windows: Sequence[str] = DEFAULT_WINDOWS,
    suv_max: float = DEFAULT_SUV_MAX,
    progress: bool = True,
    preprocess: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """``{"ct": (1, X, Y), "pet": (1, X, Y), "window", "study_key", "slice_index"}`` per body slice and window.

    ``preprocess`` turns a datalist item into ``image`` and ``body_slices`` (default: the full
    :func:`study_preprocessing`; :class:`pipeline.data.study_cache.LoadCachedStudyd` for a cache).
    """
    preprocess = preprocess or study_preprocessing(windows, suv_max)
    samples: list[dict[str, Any]] = []
    for study in tqdm(studies, desc="slicing studies", unit="study", disable=not progress):
        data = preprocess(study)
        image = data["image"].as_tensor()
        for z in flagged_slices(data["body_slices"]):
            for w, window in enumerate(windows):
                samples.append({
                    "ct": image[w : w + 1, ..., z].clone(),
                    "pet": image[-1:, ..., z].clone(),
                    "window": window,
                    "study_key": data["study_key"],
                    "slice_index": z,
                })
    return samples
