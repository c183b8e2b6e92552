"""A tumour contour from a DICOM RTSTRUCT, as a voxel mask on the study's fused grid.

The lesion measures are only as good as the lesion they are given. A PET threshold finds the hot
core, but a sarcoma's expert contour (the IBSI studies ship one per PET series) also holds its
moderately avid and necrotic parts, and a fusion that darkens those against bright soft tissue
hides the tumour that the hot core alone would call visible. Contours are planar polygons in
patient (LPS) millimetres; each is filled on the axial slice nearest its plane, and a polygon
inside another on the same slice is a hole (even-odd rule), as the RTSTRUCT standard draws them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
from numpy.typing import ArrayLike
from PIL import Image, ImageDraw

from pipeline.errors import InputError
from pipeline.io.patient_space import LPS_TO_RAS


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
        # PIL draws on (width, height) = (axis 0, axis 1); its pixel centres sit at integer coordinates.
        canvas = Image.new("1", (int(shape[0]), int(shape[1])))
        ImageDraw.Draw(canvas).polygon([tuple(p) for p in index[:, :2]], fill=1, outline=1)
        _, drawn = planes.setdefault(round(plane, 3), (z, np.zeros(tuple(shape[:2]), dtype=bool)))
        drawn ^= np.asarray(canvas, dtype=bool).T
    mask = np.zeros(tuple(shape), dtype=bool)
    for z, drawn in planes.values():
        mask[..., z] |= drawn
    return mask
