"""Training samples: co-registered 2-D (CT window, PET) slice pairs drawn from cached whole studies.

Each study goes through the same preprocessing as inference once, is cut to its body slices (the
slices every report scores) and is held by MONAI's ``CacheDataset`` as one plain ``(W + 1, X, Y, Z)``
tensor (:func:`body_slice_cache`). :class:`SlicePairDataset` then serves every body slice once per
CT window, so both windows are learnt (the window is the augmentation the paper evaluates
separately), as views into the cached study: nothing is copied until the random crops.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from monai.data import CacheDataset, Dataset
from monai.transforms import Compose, EnsureTyped, SelectItemsd, apply_transform

from pipeline.transforms.slicing import SelectBodySlicesd


def body_slice_cache(studies: Sequence[dict[str, Any]], preprocessing: Callable, num_workers: int = 0,
                     progress: bool = True) -> CacheDataset:
    """The studies' network inputs (``image``) cut to their body slices, each computed and cached once.

    ``preprocessing`` turns a datalist item into ``image`` and ``body_slices``: the data path
    (:func:`pipeline.transforms.data_path.study_preprocessing`) or a study cache's reader
    (:class:`pipeline.data.study_cache.LoadCachedStudyd`).
    """
    body = Compose([preprocessing, SelectBodySlicesd(keys="image"), SelectItemsd(keys="image"),
                    EnsureTyped(keys="image", track_meta=False)]).flatten()  # flat: CacheDataset caches it all
    return CacheDataset(list(studies), transform=body, cache_rate=1.0, num_workers=num_workers, progress=progress,
                        copy_cache=False)


class SlicePairDataset(Dataset):
    """``{"ct": (1, X, Y), "pet": (1, X, Y), "window": index}`` for every (study, body slice, CT window), then
    ``transform``.

    ``window`` is the CT window's index in ``windows``, for a loss whose target differs by window.

    Args:
        studies: cached ``{"image": (W + 1, X, Y, Z)}`` studies, CT windows then PET (:func:`body_slice_cache`).
        windows: the CT windows of the ``image`` channels, in order.
        transform: the random crops and flips applied to each pair.
    """

    def __init__(self, studies: Sequence[dict[str, Any]], windows: Sequence[str],
                 transform: Callable | None = None) -> None:
        self.studies = studies
        depths = [studies[s]["image"].shape[-1] for s in range(len(studies))]
        pairs = [(s, z, w) for s, depth in enumerate(depths) for z in range(depth) for w in range(len(windows))]
        super().__init__(pairs, transform)

    def _transform(self, index: int) -> dict[str, Any]:
        study, z, window = self.data[index]
        image = self.studies[study]["image"]
        pair = {"ct": image[window : window + 1, ..., z], "pet": image[-1:, ..., z], "window": window}
        return apply_transform(self.transform, pair) if self.transform is not None else pair
