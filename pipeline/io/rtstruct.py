"""A tumour contour from a DICOM RTSTRUCT, as a voxel mask on the study's fused grid.

The lesion measures are only as good as the lesion they are given. A PET threshold finds the hot
core, but a sarcoma's expert contour (the IBSI studies ship one per PET series) also holds its
moderately avid and necrotic parts, and a fusion that darkens those against bright soft tissue
hides the tumour that the hot core alone would call visible. Contours are planar polygons in
patient (LPS) millimetres; each is filled on the axial slice nearest its plane, and a polygon
inside another on the same slice is a hole (even-odd rule), as the RTSTRUCT standard draws them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
from numpy.typing import ArrayLike

from pipeline.errors import InputError
from pipeline.io.patient_space import LPS_TO_RAS

_ON_EDGE = 1e-3  # voxels: a centre this close to an edge is on it (millimetres through a float affine)


def _rtstruct_file(path: str | Path) -> Path:
    """``path`` itself, or the one DICOM file of a folder that holds the contour."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file())
        if len(files) != 1:
            raise InputError(f"{path}: expected one RTSTRUCT file in the lesion mask folder, found {len(files)}")
        return files[0]
    if not path.is_file():
        raise InputError(f"{path}: lesion mask not found")
    return path


def _contours(path: Path, roi: str | None) -> list[np.ndarray]:
    """The (N, 3) LPS points of every closed planar contour of the chosen ROI."""
    try:
        structure = pydicom.dcmread(path)
    except Exception as error:  # pydicom raises several types for a truncated or non-DICOM file
        raise InputError(f"{path}: unreadable RTSTRUCT ({' '.join(str(error).split())})") from None
    if structure.get("Modality") != "RTSTRUCT" or "ROIContourSequence" not in structure:
        raise InputError(f"{path}: not an RTSTRUCT with contours (modality {structure.get('Modality')!r})")
    names = {int(item.ROINumber): str(item.ROIName) for item in structure.get("StructureSetROISequence", [])}
    chosen = structure.ROIContourSequence[0] if roi is None else next(
        (item for item in structure.ROIContourSequence if names.get(int(item.ReferencedROINumber)) == roi), None)
    if chosen is None:
        raise InputError(f"{path}: no ROI named {roi!r}; its ROIs: {', '.join(names.values()) or 'none'}")
    contours = []
    for contour in chosen.get("ContourSequence", []):
        if contour.get("ContourGeometricType", "CLOSED_PLANAR") != "CLOSED_PLANAR":
            continue
        points = np.asarray(contour.ContourData, dtype=np.float64)
        if points.size < 9 or points.size % 3:
            raise InputError(f"{path}: a contour has {points.size} coordinates, not three per point for 3+ points")
        contours.append(points.reshape(-1, 3))
    if not contours:
        raise InputError(f"{path}: the ROI has no closed planar contour")
    return contours


def polygon_mask(polygon: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """The voxels of a 2-D grid whose centres (integer indices) lie inside ``polygon`` ((N, 2) indices) or on it.

    Even-odd scanlines through the voxel centres, as an RTSTRUCT's contours are meant: a rasteriser that fills every
    pixel an edge touches (PIL's) grows a contour by half a voxel on its lower sides and so shifts it. Centres on an
    edge count as inside, so a contour traced through a mask's boundary voxels gives that mask back.
    """
    x, y = np.asarray(polygon, dtype=np.float64).T
    x_next, y_next = np.roll(x, -1), np.roll(y, -1)
    mask = np.zeros(tuple(shape), dtype=bool)
    rows = np.arange(max(0, math.ceil(y.min() - _ON_EDGE)), min(int(shape[1]) - 1, math.floor(y.max() + _ON_EDGE)) + 1)
    columns = np.arange(max(0, math.ceil(x.min() - _ON_EDGE)),
                        min(int(shape[0]) - 1, math.floor(x.max() + _ON_EDGE)) + 1)
    if rows.size == 0 or columns.size == 0:
        return mask
    row, low, high = rows[:, None], np.minimum(y, y_next), np.maximum(y, y_next)
    with np.errstate(divide="ignore", invalid="ignore"):  # level edges meet no scanline: nan, never a crossing
        at = x + (row - y) / (y_next - y) * (x_next - x)  # (rows, edges): where each edge meets each scanline
        nearest = np.round(at)
        through = np.abs(at - nearest) < _ON_EDGE
    crossings = np.sort(np.where((low <= row) & (row < high), at, np.inf), axis=1)  # half-open: a vertex counts once
    inside = np.stack([np.searchsorted(line, columns) % 2 == 1 for line in crossings])  # odd crossings to the left
    # Centres on an edge: where a sloped edge passes through one, and along a level edge on a scanline.
    r, e = np.nonzero((low - _ON_EDGE <= row) & (row <= high + _ON_EDGE) & (high > low) & through)
    c = nearest[r, e].astype(int) - columns[0]
    keep = (0 <= c) & (c < columns.size)
    inside[r[keep], c[keep]] = True
    for r, e in zip(*np.nonzero((high == low) & (np.abs(row - y) < _ON_EDGE))):
        inside[r, (columns >= min(x[e], x_next[e]) - _ON_EDGE) & (columns <= max(x[e], x_next[e]) + _ON_EDGE)] = True
    mask[columns[0]:columns[-1] + 1, rows[0]:rows[-1] + 1] = inside.T
    return mask


def rtstruct_mask(path: str | Path, affine: ArrayLike, shape: Sequence[int], roi: str | None = None) -> np.ndarray:
    """The ROI (default: the file's first) of the RTSTRUCT at ``path`` as a boolean mask of ``shape``.

    ``affine`` maps voxel indices to RAS mm (a MetaTensor's); the grid's third axis must be the
    axial one, as every study here is. Contours outside the grid are left out. Contours of one plane combine by
    exclusive or (an inner one is a hole); planes that fall on one slice of a coarser grid add up, so two planes do
    not cancel each other.
    """
    file = _rtstruct_file(path)
    to_index = np.linalg.inv(np.asarray(affine, dtype=np.float64)) @ LPS_TO_RAS  # LPS mm -> voxel index
    planes: dict[float, tuple[int, np.ndarray]] = {}
    for points in _contours(file, roi):
        index = (to_index[:3, :3] @ points.T + to_index[:3, 3:]).T
        plane = float(index[:, 2].mean())
        z = int(round(plane))
        if not 0 <= z < shape[2]:
            continue
        _, drawn = planes.setdefault(round(plane, 3), (z, np.zeros(tuple(shape[:2]), dtype=bool)))
        drawn ^= polygon_mask(index[:, :2], shape[:2])
    mask = np.zeros(tuple(shape), dtype=bool)
    for z, drawn in planes.values():
        mask[..., z] |= drawn
    return mask
