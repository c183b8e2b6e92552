"""Does the tumour stay visible? Lesion contrast of the fused image relative to the PET's.

The eight fusion metrics score whole slices and never ask whether the lesion survived the fusion;
this module does, on whole study volumes, with the network's [0, 1] inputs (CT windowed,
PET = SUV / ceiling clipped):

- **Lesion, real data with a contour**: the study's expert tumour contour (an RTSTRUCT, read by
  :func:`pipeline.io.rtstruct.rtstruct_mask`), the lesion a reader looks for: the whole tumour,
  its moderately avid and necrotic parts included.
- **Lesion, real data without one**: the voxels at or above ``fraction`` (default 40 %) of the PET maximum,
  restricted to the 26-connected component holding the hottest voxel. The IBSI soft-tissue-sarcoma
  crops are centred on the tumour, so the study maximum is the lesion's SUVmax. The scaling is
  monotonic, so this is the usual SUVmax threshold unless the PET was clipped at the ceiling.
- **Lesion, phantom**: the designed tumour ball of ``truth.json`` (centre in LPS mm, radius in mm)
  sampled on the volume's grid: the voxels whose centres lie inside it.
- **Ring** (the surroundings): voxels whose centres lie within ``ring_mm`` (default 10 mm,
  Euclidean in mm) of a lesion voxel's centre, the lesion itself excluded. The ring stops at the
  volume border.
- **Contrast**: C = mean_lesion - mean_ring, in the [0, 1] image; ``nan`` when a mask is empty.
- **Ratio** = C(fused) / C(PET), the PET's lesion contrast the fused image recovers: about 1 when
  it keeps the lesion as visible as the PET, about 0 when it vanished, negative when the fusion
  shows the tumour darker than its surroundings; ``nan`` when C(PET) <= 0 (no lesion to keep).
  (Before 2026-12-05 the contrast was Michelson's, (L - R) / (L + R), and the lesion always the
  PET threshold: that rewarded darkening a tumour's surroundings instead of keeping it bright.)
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage

from pipeline.errors import InputError
from pipeline.io.patient_space import LPS_TO_RAS
from pipeline.io.rtstruct import rtstruct_mask

DEFAULT_FRACTION = 0.4
DEFAULT_RING_MM = 10.0


def lesion_mask_from_pet(pet: ArrayLike, fraction: float = DEFAULT_FRACTION) -> np.ndarray:
    """Voxels >= ``fraction`` of the PET maximum, connected (26-neighbourhood) to the hottest voxel.

    Note: where the scaled PET is clipped (its maximum is 1, SUV at or above the ceiling), the
    threshold is ``fraction`` of the ceiling rather than of the true SUVmax, so the mask is larger
    than the SUVmax definition gives, and the first clipped voxel picks the component. It is still
    a hot, tumour-centred region, so the contrast stays meaningful. An all-zero PET gives an empty mask.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    pet = np.asarray(pet, dtype=np.float64)
    hottest = np.unravel_index(np.argmax(pet), pet.shape)
    peak = pet[hottest]
    if not peak > 0:
        return np.zeros(pet.shape, dtype=bool)
    full_neighbourhood = np.ones((3,) * pet.ndim, dtype=bool)
    components, _ = ndimage.label(pet >= fraction * peak, structure=full_neighbourhood)
    return components == components[hottest]


def phantom_lesion_mask(truth: Mapping, affine: ArrayLike, shape: Sequence[int]) -> np.ndarray:
    """The designed tumour ball of a phantom ``truth.json`` on a grid (``affine``: voxel index -> RAS mm).

    Only the ball's bounding box in index space is sampled, so large grids cost little.
    """
    tumour = truth["tumour"]
    radius = float(tumour["radius_mm"])
    centre = LPS_TO_RAS[:3, :3] @ np.asarray(tumour["centre_lps_mm"], dtype=np.float64)
    affine = np.asarray(affine, dtype=np.float64)
    linear, offset = affine[:3, :3], affine[:3, 3]
    size = np.asarray(shape, dtype=int)
    centre_index = np.linalg.solve(linear, centre - offset)
    # A ball of radius r maps to an index-space ellipsoid whose half-width on axis i is r * |row i of A^-1|.
    half_width = radius * np.linalg.norm(np.linalg.inv(linear), axis=1)
    low = np.clip(np.floor(centre_index - half_width), 0, size).astype(int)
    high = np.clip(np.ceil(centre_index + half_width) + 1, 0, size).astype(int)
    mask = np.zeros(tuple(size), dtype=bool)
    if np.any(low >= high):
        return mask
    index = np.indices(high - low).reshape(3, -1) + low[:, None]
    world = linear @ index + offset[:, None]
    inside = np.sum((world - centre[:, None]) ** 2, axis=0) <= radius**2
    mask[tuple(index[:, inside])] = True
    return mask


def load_truth(path: str | Path) -> dict[str, Any]:
    """A phantom ``truth.json``, checked for the tumour centre and radius the lesion mask needs."""
    try:
        truth = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: unreadable phantom truth file ({error})") from None
    tumour = truth.get("tumour") if isinstance(truth, dict) else None
    if not isinstance(tumour, dict) or not {"centre_lps_mm", "radius_mm"} <= tumour.keys():
        raise InputError(f"{path}: phantom truth file has no tumour centre_lps_mm and radius_mm")
    return truth


def known_lesion(fields: Mapping[str, Any], affine: ArrayLike, shape: Sequence[int]) -> tuple[str, np.ndarray] | None:
    """The tumour a study's datalist fields know, on a grid: ``("phantom", mask)`` from its ``truth``, else
    ``("contour", mask)`` from its ``lesion_mask``; ``None`` when they know neither."""
    if fields.get("truth"):
        return "phantom", phantom_lesion_mask(load_truth(fields["truth"]), affine, shape)
    if fields.get("lesion_mask"):
        return "contour", rtstruct_mask(fields["lesion_mask"], affine, shape)
    return None


def ring_mask(lesion: ArrayLike, spacing: Sequence[float], ring_mm: float = DEFAULT_RING_MM) -> np.ndarray:
    """The shell within ``ring_mm`` (mm, per-axis ``spacing``) of the lesion, the lesion excluded.

    The distance transform runs on the lesion's bounding box padded by the ring, not the volume.
    """
    lesion = np.asarray(lesion, dtype=bool)
    spacing = np.asarray(spacing, dtype=np.float64)
    if spacing.shape != (lesion.ndim,) or np.any(spacing <= 0):
        raise ValueError(f"spacing must be {lesion.ndim} positive values, got {spacing.tolist()}")
    if ring_mm <= 0:
        raise ValueError(f"ring_mm must be positive, got {ring_mm}")
    ring = np.zeros_like(lesion)
    if not lesion.any():
        return ring
    reach = np.ceil(ring_mm / spacing).astype(int)
    (bounds,) = ndimage.find_objects(lesion.astype(np.uint8))
    box = tuple(
        slice(max(b.start - r, 0), min(b.stop + r, n)) for b, r, n in zip(bounds, reach, lesion.shape)
    )
    distance = ndimage.distance_transform_edt(~lesion[box], sampling=spacing)
    ring[box] = (distance > 0) & (distance <= ring_mm)
    return ring


def lesion_contrast(image: ArrayLike, lesion: ArrayLike, ring: ArrayLike) -> float:
    """Mean lesion minus mean ring in a [0, 1] image; ``nan`` if either mask is empty."""
    image = np.asarray(image, dtype=np.float64)
    lesion, ring = np.asarray(lesion, dtype=bool), np.asarray(ring, dtype=bool)
    if not image.shape == lesion.shape == ring.shape:
        raise ValueError(f"image {image.shape}, lesion {lesion.shape} and ring {ring.shape} shapes differ")
    if not lesion.any() or not ring.any():
        return math.nan
    return float(image[lesion].mean() - image[ring].mean())


def lesion_contrast_ratio(fused: ArrayLike, pet: ArrayLike, lesion: ArrayLike, ring: ArrayLike) -> dict[str, float]:
    """``contrast_fused``, ``contrast_pet`` and their ``ratio`` (``nan`` when the PET shows no lesion).

    Takes the ring rather than the spacing so one study's ring serves all its fused channels.
    """
    contrast_fused = lesion_contrast(fused, lesion, ring)
    contrast_pet = lesion_contrast(pet, lesion, ring)
    ratio = contrast_fused / contrast_pet if contrast_pet > 0 else math.nan
    return {"contrast_fused": contrast_fused, "contrast_pet": contrast_pet, "ratio": ratio}
