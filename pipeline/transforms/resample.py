"""Resample one volume onto another's voxel grid in physical (world) space.

SimpleITK's ResampleImageFilter is used instead of MONAI's ``ResampleToMatch`` because the latter builds
a dense coordinate grid (4 float values per output voxel: over 1 GB for a 512x512x300 CT). SimpleITK
works in LPS, MONAI affines are RAS; both conversions happen here and nowhere else.

SimpleITK arrays are indexed (z, y, x). Rather than transposing our C-ordered ``(X, Y, Z)`` arrays
(a full strided copy each way), the SimpleITK images are given our axes in reverse order: its "x" axis
is our Z. The physical geometry is unchanged, and arrays pass in and out in their memory order.

SimpleITK (over 50 MB) is imported on the first resampling, not with the package: workflows that
read preprocessed studies (:mod:`pipeline.data.study_cache`) then run where it is not installed,
such as a bare GPU training host.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping
from typing import TYPE_CHECKING

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform

from pipeline.errors import InputError
from pipeline.io.patient_space import RAS_TO_LPS

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    import SimpleITK as sitk

_SLAB_VOXELS = 8 * 1024**2  # output voxels resampled per SimpleITK call (32 MB of float32)
# Interpolation modes -> SimpleITK interpolator names (looked up once SimpleITK is imported).
INTERPOLATORS = {
    "linear": "sitkLinear",
    "nearest": "sitkNearestNeighbor",
    "bspline": "sitkBSpline",
    "lanczos": "sitkLanczosWindowedSinc",
}


def _name(img: MetaTensor) -> str:
    return str(img.meta.get("filename_or_obj", "volume"))


def sitk_geometry(img: MetaTensor) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """(origin, spacing, direction) in LPS of a RAS MetaTensor, axes reversed; rejects sheared affines."""
    affine = RAS_TO_LPS @ np.asarray(img.affine, dtype=float)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    direction = affine[:3, :3] / spacing
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):
        raise InputError(f"{_name(img)}: voxel axes are not orthogonal (sheared affine), cannot resample")
    return tuple(affine[:3, 3]), tuple(spacing[::-1]), tuple(direction[:, ::-1].ravel())


def to_sitk(img: MetaTensor) -> sitk.Image:
    """A single-channel ``(1, X, Y, Z)`` MetaTensor as a float32 SimpleITK image (axes reversed, LPS)."""
    import SimpleITK as sitk

    origin, spacing, direction = sitk_geometry(img)
    image = sitk.GetImageFromArray(img.detach().cpu().numpy()[0].astype(np.float32, copy=False))
    image.SetOrigin(origin)
    image.SetSpacing(spacing)
    image.SetDirection(direction)
    return image


def check_same_frame(img: MetaTensor, reference: MetaTensor) -> None:
    """Refuse to combine volumes whose FrameOfReferenceUIDs are both known and differ."""
    frame, reference_frame = img.meta.get("FrameOfReferenceUID"), reference.meta.get("FrameOfReferenceUID")
    if frame and reference_frame and frame != reference_frame:
        raise InputError(f"{_name(img)}: FrameOfReferenceUID differs from that of {_name(reference)} "
                         "(not co-registered)")


class ResampleToReference(Transform):
    """Resample ``img`` onto ``reference``'s grid; the output has the reference's affine and shape.

    ``mode``: one of :data:`INTERPOLATORS`; ``default_value`` fills voxels outside ``img``.
    """

    def __init__(self, mode: str = "linear", default_value: float = 0.0):
        if mode not in INTERPOLATORS:
            raise ValueError(f"unknown interpolation mode {mode!r}; choose from {sorted(INTERPOLATORS)}")
        self.mode = mode
        self.default_value = default_value

    def __call__(self, img: MetaTensor, reference: MetaTensor) -> MetaTensor:
        import SimpleITK as sitk

        check_same_frame(img, reference)
        moving = to_sitk(img)
        origin, spacing, direction = sitk_geometry(reference)
        resampler = sitk.ResampleImageFilter()
        resampler.SetOutputSpacing(spacing)
        resampler.SetOutputDirection(direction)
        resampler.SetInterpolator(getattr(sitk, INTERPOLATORS[self.mode]))
        resampler.SetDefaultPixelValue(self.default_value)
        resampler.SetOutputPixelType(sitk.sitkFloat32)
        out = torch.empty((1, *reference.shape[1:]), dtype=torch.float32)
        # Slabs of the reference's first axis (SimpleITK's slowest): each lands as one contiguous block,
        # so the full output never exists twice (SimpleITK's buffer plus ours).
        n_x, n_y, n_z = out.shape[1:]
        x_step = np.asarray(direction).reshape(3, 3)[:, 2] * spacing[2]
        slab = max(1, _SLAB_VOXELS // (n_y * n_z))
        for start in range(0, n_x, slab):
            stop = min(start + slab, n_x)
            resampler.SetSize([n_z, n_y, stop - start])
            resampler.SetOutputOrigin(tuple(np.asarray(origin) + start * x_step))
            part = resampler.Execute(moving)
            out.numpy()[0, start:stop] = sitk.GetArrayViewFromImage(part)
        meta = {**img.meta, "affine": reference.affine.clone(), "spatial_shape": np.array(out.shape[1:]),
                "resampled_to": str(reference.meta.get("filename_or_obj", ""))}
        return MetaTensor(out, meta=meta)


class ResampleToReferenced(MapTransform):
    """Dictionary twin of :class:`ResampleToReference`: ``keys`` are resampled onto ``data[ref_key]``.

    Default is PET onto the CT grid; ``ResampleToReferenced(keys="ct", ref_key="pet")`` goes the other way.
    """

    def __init__(self, keys: KeysCollection = "pet", ref_key: str = "ct", mode: str = "linear",
                 default_value: float = 0.0, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.ref_key = ref_key
        self.resampler = ResampleToReference(mode, default_value)

    def __call__(self, data: Mapping[Hashable, MetaTensor]) -> dict[Hashable, MetaTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.resampler(d[key], d[self.ref_key])
        return d


def covered_slices(img: MetaTensor, reference: MetaTensor) -> torch.Tensor:
    """Bool ``(Z,)``: which axial slices of ``reference`` lie within ``img``'s axial extent.

    Each reference slice's centre is mapped into ``img``'s voxel indices; it is covered when its slice index lies
    within ``img``'s voxels (:func:`_within`): not so for a PET shorter than, or shifted along z against, the CT.
    """
    n_x, n_y, n_z = reference.shape[1:]
    centres = np.stack([np.full(n_z, (n_x - 1) / 2), np.full(n_z, (n_y - 1) / 2), np.arange(n_z), np.ones(n_z)])
    return torch.as_tensor(_within(img, reference, centres, axes=(2,)), dtype=torch.bool)


def _within(img: MetaTensor, reference: MetaTensor, points: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """Which of ``reference``'s voxel ``points`` (homogeneous, 4 x N) lie within ``img``'s voxels along ``axes``, to
    their outer faces (-0.5 to n - 0.5): the resampler interpolates there and fills 0 beyond."""
    index = np.linalg.inv(np.asarray(img.affine, float)) @ (np.asarray(reference.affine, float) @ points)
    return np.all([(index[axis] >= -0.5) & (index[axis] <= img.shape[1 + axis] - 0.5) for axis in axes], axis=0)


IN_PLANE_SAMPLES = 17
"""Points along each in-plane axis of the reference at which :func:`in_plane_overlap` looks for the image."""


def in_plane_overlap(img: MetaTensor, reference: MetaTensor) -> float:
    """The fraction of ``reference``'s in-plane field (a grid of points over its middle slice, edges included) that
    lies within ``img``'s voxels in-plane: 0 for a PET beside its CT, whose resampling is zero everywhere."""
    n_x, n_y, n_z = reference.shape[1:]
    x, y = np.meshgrid(np.linspace(0, n_x - 1, IN_PLANE_SAMPLES), np.linspace(0, n_y - 1, IN_PLANE_SAMPLES))
    points = np.stack([x.ravel(), y.ravel(), np.full(x.size, (n_z - 1) / 2), np.ones(x.size)])
    return float(_within(img, reference, points, axes=(0, 1)).mean())


def blank_uncovered(image: torch.Tensor, covered: torch.Tensor) -> torch.Tensor:
    """``image`` (..., Z), in place, with the axial slices that ``covered`` ((Z,), or (B, Z) for a batch) leaves out
    set to 0: a CT slice without PET is never shown as a fusion of CT alone. In place (inference tensors too), so a
    streamed slab is not copied."""
    flags = covered.to(device=image.device, dtype=torch.bool)
    flags = flags.reshape(*flags.shape[:-1], *(1,) * (image.ndim - flags.ndim), flags.shape[-1])
    with torch.inference_mode(image.is_inference()):
        return image.masked_fill_(~flags, 0.0)


class BlankUncoveredSlicesd(MapTransform):
    """:func:`blank_uncovered` on ``data[key]`` by :class:`PETCoveraged`'s flags: the bundle's fused output (its
    postprocessing sees the batch's keys beside the prediction) as the streamed doors write it.

    A study cache's items have no such flags and pass as they are: the evaluation that reads them writes no volumes,
    and scores body slices, which lie within the PET.
    """

    def __init__(self, keys: KeysCollection = "pred", flags_key: str = "pet_slices") -> None:
        super().__init__(keys)
        self.flags_key = flags_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        if self.flags_key in d:
            for key in self.key_iterator(d):
                d[key] = blank_uncovered(d[key], torch.as_tensor(d[self.flags_key]))
        return d


class PETCoveraged(MapTransform):
    """``data[output_key]`` = :func:`covered_slices` of ``data[key]`` on ``data[ref_key]``; run before resampling.

    A warning names the study and how many reference slices lack PET, since those slices show CT alone;
    a PET that covers none of them, or lies beside them in-plane, is refused (InputError), whichever door the study
    came in by.
    """

    def __init__(self, keys: KeysCollection = "pet", ref_key: str = "ct", output_key: str = "pet_slices"):
        super().__init__(keys)
        self.ref_key = ref_key
        self.output_key = output_key

    def __call__(self, data: Mapping[Hashable, MetaTensor]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            flags = covered_slices(d[key], d[self.ref_key])
            missing = int((~flags).sum())
            if missing == flags.numel():  # every slice would be CT alone, written as a "fusion"
                raise InputError(f"{_name(d[key])}: the PET does not overlap its CT axially (none of the "
                                 f"{missing} CT slices lies within its extent)")
            if in_plane_overlap(d[key], d[self.ref_key]) == 0:  # nor would any slice beside the PET's field of view
                raise InputError(f"{_name(d[key])}: the PET does not overlap its CT in-plane (its field of view lies "
                                 "beside the CT's: mismatched positions or pixel spacing)")
            if missing:
                logger.warning("study %s: %d of %d CT slices lack PET (PET shorter than or shifted against the CT); "
                               "they are left out of the fused output and the metrics", d.get("study_key", "?"),
                               missing, flags.numel())
            d[self.output_key] = flags
        return d
