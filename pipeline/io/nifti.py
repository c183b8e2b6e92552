"""Load a NIfTI volume as a channel-first RAS ``MetaTensor``, interchangeable with DICOM-loaded ones.

NIfTI carries no modality or PET units, so the caller states the modality; the affine is nibabel's
(sform, else qform), which is already RAS like the DICOM loader's output. A file with neither (both codes 0)
is refused: nibabel would place it by its voxel sizes alone, mirrored front to back against a scanner's space. So is
a header whose affine, voxel type or claimed size no scanner's volume has, before any voxel is read or allocated.
The voxels are read a block of axial slices at a time into the volume the DICOM loader fills too
(:mod:`pipeline.io.volume_fill`: int16 for a CT of whole HU), never as a whole float32 copy.
"""

from __future__ import annotations

import logging
import math
import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import BinaryIO

import nibabel as nib
import numpy as np
import torch
from isal import igzip
from monai.data import MetaTensor

from pipeline.errors import InputError, one_line
from pipeline.io.atomic import atomic_write
from pipeline.io.patient_space import voxel_size_problem
from pipeline.io.volume_fill import BLOCK_SLICES, VolumeFill

logger = logging.getLogger(__name__)


def load_nifti(path: str | os.PathLike[str], modality: str) -> MetaTensor:
    """Read a 3-D NIfTI file into a ``(1, X, Y, Z)`` MetaTensor with ``meta["modality"]`` set: float32, int16 for a CT
    of whole HU."""
    path = Path(path)
    try:
        image = nib.load(path, keep_file_open=True)  # every block from one open file: a .gz is inflated once
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except Exception as exc:  # nibabel signals corrupt or foreign files with many exception types
        raise InputError(f"{path}: unreadable NIfTI ({type(exc).__name__}: {one_line(exc)})") from None
    shape = image.shape[:3] if len(image.shape) == 4 and image.shape[3] == 1 else image.shape
    if len(shape) != 3:
        raise InputError(f"{path}: expected a 3-D volume, got shape {image.shape}")
    problem = _geometry_problem(image) or _voxel_type_problem(image) or _data_size_problem(image, path)
    if problem:
        raise InputError(f"{path}: {problem}")
    volume, nonfinite = _volume(shape, modality, path), 0
    for start in range(0, shape[2], BLOCK_SLICES):
        block, count = _finite(_block(image, path, start, min(start + BLOCK_SLICES, shape[2])))
        volume.put(block)
        nonfinite += count
    if nonfinite:
        _refuse_or_warn(nonfinite, volume.voxels.numel(), path, modality)
    affine = np.asarray(image.affine, dtype=float)
    meta = {
        "modality": modality,
        "filename_or_obj": str(path),
        "original_affine": affine,
        "spatial_shape": np.array(shape),
        "space": "RAS",
        "original_channel_dim": float("nan"),
    }
    return MetaTensor(volume.voxels, affine=torch.as_tensor(affine, dtype=torch.float64), meta=meta)


def _geometry_problem(image: nib.Nifti1Image) -> str:
    """Why the affine nibabel took (sform, else qform) places no scanner's volume; "" when it does.

    Checked on the header, before any voxel is read: a NaN would surface later as an SVD that does not converge, and
    a voxel size of 0 as a "sheared" affine after numpy's division warnings.
    """
    form = "sform" if image.get_sform(coded=True)[1] else "qform" if image.get_qform(coded=True)[1] else ""
    if not form:
        return "no scanner geometry: qform and sform codes are 0"
    affine = np.asarray(image.affine, dtype=float)
    if not np.isfinite(affine).all():
        return f"{form} affine is not finite (NaN or infinite values)"
    with np.errstate(over="ignore"):  # a NIfTI-2 float64 affine can overflow the norm: inf, refused as out of range
        sizes = np.linalg.norm(affine[:3, :3], axis=0)
    return voxel_size_problem(sizes, [f"{form} spacing along {axis}" for axis in "ijk"])


def _voxel_type_problem(image: nib.Nifti1Image) -> str:
    """Why the stored voxels are no intensities; "" when they are: a complex volume would lose its imaginary part
    to a numpy warning, and an RGB one is a picture, not a CT or PET."""
    if image.get_data_dtype().kind in "iuf":
        return ""
    return f"{image.header.get_value_label('datatype')} voxels are not CT or PET intensities"


DEFLATE_MAX_RATIO = 1032
"""The most a deflate stream inflates: 258 bytes from a copy coded in 2 bits (zlib's technical details), so a .nii.gz
file holds at most this many times its size."""


def _data_size_problem(image: nib.Nifti1Image, path: Path) -> str:
    """Why the file cannot hold the voxels its header claims; "" when it can.

    A damaged or hostile header (30000^3 voxels in a 400 kB file) would otherwise have the volume allocated whole
    before the first read, and fail on 54 TB with no file named. An uncompressed file's size is checked exactly; a
    .nii.gz (the loader's other input) against the most its size can inflate to, known without inflating it: the
    claim of a damaged header is orders of magnitude past that, and one within it is refused by :func:`_volume` or
    ends at the first missing slice.
    """
    proxy = image.dataobj
    claimed = proxy.offset + math.prod(proxy.shape) * proxy.dtype.itemsize
    size = path.stat().st_size
    most = size * DEFLATE_MAX_RATIO if path.name.endswith(".gz") else size
    if claimed <= most:
        return ""
    return (f"the header's {proxy.shape} {image.header.get_value_label('datatype')} voxels take {claimed:,} bytes, "
            f"more than the file's {size:,} bytes can hold (damaged dimensions or a truncated file)")


def _volume(shape: tuple[int, int, int], modality: str, path: Path) -> VolumeFill:
    """The empty volume to fill: one the file can hold but this machine cannot is refused naming the file, not by
    torch's allocator naming none."""
    try:
        return VolumeFill(shape, modality)
    except RuntimeError:  # "DefaultCPUAllocator: can't allocate memory"; nothing else raises on a valid shape
        raise InputError(f"{path}: a {shape} {modality} volume does not fit in memory") from None


def _block(image: nib.spatialimages.SpatialImage, path: Path, start: int, stop: int) -> np.ndarray:
    """Axial slices ``start:stop`` as ``(X, Y, n)`` float32: the values ``np.asarray(image.dataobj, np.float32)``
    holds there, nibabel scaling a part of the file as it scales the whole."""
    slicer = (slice(None), slice(None), slice(start, stop), *(0,) * (image.ndim - 3))
    try:
        return np.asarray(image.dataobj[slicer], dtype=np.float32)
    except Exception as exc:  # a truncated or corrupt file shows when its voxels are read
        raise InputError(f"{path}: unreadable NIfTI ({type(exc).__name__}: {one_line(exc)})") from None


def _finite(block: np.ndarray) -> tuple[np.ndarray, int]:
    """``block`` with its NaN/Inf voxels set to 0, and how many there were.

    A float64 sum is finite exactly when every float32 voxel is (it cannot overflow), and costs no mask when it is.
    """
    if np.isfinite(np.sum(block, dtype=np.float64)):
        return block, 0
    finite = np.isfinite(block)
    return np.where(finite, block, np.float32(0.0)), block.size - int(np.count_nonzero(finite))


def _refuse_or_warn(count: int, size: int, path: Path, modality: str) -> None:
    """NaN/Inf voxels are 0 in a PET (outside its field of view: SPM and FSL write NaN there, and no activity is what
    they mean); in any other volume they are refused, since 0 would pass for water in a CT."""
    if modality != "PT":
        raise InputError(f"{path}: {count} of {size} voxels are NaN or infinite in a {modality} volume: "
                         "set them to a value first (-1024 HU, air, outside a CT's field of view)")
    logger.warning("%s: %d of %d PET voxels are NaN or infinite (outside the field of view?); set to 0",
                   path, count, size)


# NIfTI xform code "scanner anatomical": the affine is the scanner's patient space.
SCANNER_XFORM = 1


def _scanner_image(data: np.ndarray, affine: np.ndarray,
                   slope_inter: tuple[float, float] | None = None) -> nib.Nifti1Image:
    image = nib.Nifti1Image(data, np.asarray(affine, dtype=float))
    image.set_qform(image.affine, code=SCANNER_XFORM)
    image.set_sform(image.affine, code=SCANNER_XFORM)
    image.header.set_xyzt_units("mm")
    if slope_inter is not None:
        image.header.set_slope_inter(*slope_inter)
    return image


GZIP_LEVEL = 1
"""ISA-L's fast deflate level. On fused 512 x 512 volumes it packs about as tightly as zlib at level 1 (nibabel's
default: 0.866 against 0.860 of the raw size in the lung window, 0.218 against 0.222 in the mediastinal) about 10 times
as fast (430 and 1348 MB/s against 40 and 132 on a 2-core AMD EPYC): zlib spent 8-10 s of CPU on a 512 x 512 x 300
study's two volumes, against 22 s for the whole study with the Laplacian fuser."""


@contextmanager
def _nifti_output(path: Path, target: Path) -> Iterator[BinaryIO]:
    """``path`` (the atomic write's temporary) opened for writing the NIfTI file ``target``, gzip-compressed by ISA-L
    when the target's name ends in ``.gz``.

    Like nibabel's own writer, the gzip header holds neither the file's name nor a time, so one volume always gives
    the same bytes (the name would be the atomic write's temporary one).
    """
    with open(path, "wb") as file:
        if not target.name.endswith(".gz"):
            yield file
            return
        with igzip.GzipFile(filename="", mode="wb", compresslevel=GZIP_LEVEL, fileobj=file, mtime=0) as packed:
            yield packed


def save_nifti(path: str | os.PathLike[str], array: np.ndarray, affine: np.ndarray,
               slope_inter: tuple[float, float] | None = None) -> Path:
    """Write a 3-D array with its RAS affine atomically (a crash leaves the old file or none)."""
    path = Path(path)
    image = _scanner_image(array, affine, slope_inter)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as temporary, _nifti_output(temporary, path) as file:
        image.to_file_map({"image": nib.FileHolder(fileobj=file)})
    return path


class NiftiSliceWriter:
    """Write a float32 ``(X, Y, Z)`` NIfTI slab by slab along z: the file :func:`save_nifti` writes, never held whole.

    NIfTI stores x fastest, so each axial slice is one contiguous run after the header and a
    volume streams out in z order. A context manager: the file appears atomically on a clean exit
    with every slice written, and is removed on an exception.

    Each slab is compressed and written by a thread of the writer's own while the caller goes on (zlib and the file
    write release the GIL). In the caller's thread gzip took a third of a 512 x 512 x 300 study with the Laplacian
    fuser (9 s of 27 for its two volumes, 2 cores), on one core while the other waited; overlapped with the fusion,
    scoring and DICOM writing, ``tools/bench_batch.py`` ran 3.44 studies a minute against 2.18, and 0.52 against 0.49
    with the model. At most :attr:`PENDING_SLABS` slabs wait, so the memory held stays a few slabs; an error of the
    thread is raised by the next :meth:`write` or on leaving, and the file is then removed as on any failure.
    """

    PENDING_SLABS = 2

    def __init__(
        self, path: str | os.PathLike[str], shape: tuple[int, int, int], affine: np.ndarray, description: str = ""
    ) -> None:
        """``description``: the header's ``descrip`` (at most 80 bytes), what made the volume."""
        self.path = Path(path)
        self.shape = tuple(int(n) for n in shape)
        image = _scanner_image(np.broadcast_to(np.float32(0.0), self.shape), affine)  # a header, no pixels
        image.update_header()
        self._header = image.header
        self._header.set_slope_inter(1.0, 0.0)  # what nibabel's own writer records for unscaled floats
        self._header["descrip"] = description
        self._written = 0

    def __enter__(self) -> NiftiSliceWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._files = ExitStack()
        temporary = self._files.enter_context(atomic_write(self.path))
        self._file = self._files.enter_context(_nifti_output(temporary, self.path))
        self._header.write_to(self._file)
        self._file.write(b"\0" * (self._header.get_data_offset() - self._file.tell()))
        # Left before the file (LIFO): every slab is written, or the wait ends, before the file is closed.
        self._thread = self._files.enter_context(ThreadPoolExecutor(1, thread_name_prefix="nifti-writer"))
        self._pending: deque[Future] = deque()
        return self

    def write(self, slab: np.ndarray) -> None:
        """Append the next ``(X, Y, n)`` slices."""
        if tuple(slab.shape[:2]) != self.shape[:2] or self._written + slab.shape[2] > self.shape[2]:
            raise ValueError(f"{self.path.name}: slab {slab.shape} does not continue a {self.shape} volume "
                             f"at slice {self._written}")
        self._settle(self.PENDING_SLABS - 1)
        self._pending.append(self._thread.submit(self._file.write, np.asarray(slab, dtype=np.float32).tobytes("F")))
        self._written += slab.shape[2]

    def _settle(self, keep: int) -> None:
        """Wait for the oldest slabs until at most ``keep`` are pending; a failed write raises its error here."""
        while len(self._pending) > keep:
            self._pending.popleft().result()

    def __exit__(self, *exc: object) -> bool | None:
        error = None
        if exc[0] is None:
            try:
                self._settle(0)
                if self._written != self.shape[2]:
                    raise ValueError(f"{self.path.name}: {self._written} of {self.shape[2]} slices written")
            except Exception as failure:
                error, exc = failure, (type(failure), failure, failure.__traceback__)
        for waiting in self._pending:  # after a failure: the slabs not yet begun are dropped
            waiting.cancel()
        suppressed = self._files.__exit__(*exc)
        if error is not None:
            raise error
        return suppressed

