"""The tumour a study's datalist knows, as the study's ``label`` on its fused grid.

A phantom's ``truth`` or a real study's ``lesion_mask`` contour: the study cache stores the same mask, so a
workflow measures the same lesion (validation's lesion ratio, the evaluation's lesion report) whether it reads
the cache or the studies themselves.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

from pipeline.metrics.lesion import known_lesion


class KnownLesiond(MapTransform):
    """``data[label_key]`` = the known tumour (1, X, Y, Z) on ``data[key]``'s grid and ``data["lesion_source"]`` where
    it came from (``phantom`` or ``contour``); nothing where the study's fields (``truth``, ``lesion_mask``) name none,
    and the measures fall back to a PET threshold."""

    def __init__(self, keys: KeysCollection = "image", label_key: str = "label") -> None:
        super().__init__(keys)
        self.label_key = label_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            known = known_lesion(d, np.asarray(image.affine, dtype=np.float64), image.shape[1:])
            if known is not None:
                d["lesion_source"] = known[0]
                d[self.label_key] = MetaTensor(torch.from_numpy(known[1][None].astype(np.float32)), affine=image.affine)
        return d
