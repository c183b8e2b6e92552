"""NIfTI loading: RAS affine and channel-first data interchangeable with the DICOM loader's output."""

from __future__ import annotations

import errno
import gzip
import struct
import threading
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from isal import igzip

from pipeline.errors import InputError
from pipeline.io import nifti
from pipeline.io.dicom import load_series
from pipeline.io.nifti import NiftiSliceWriter, load_nifti, save_nifti


def test_matches_dicom_of_the_same_volume(dicom_factory, tmp_path: Path):
    values = dicom_factory.ramp(base=-500.0)
    from_dicom = load_series(dicom_factory.series("ct", values, modality="CT", origin=(5.0, 6.0, 7.0)))
    path = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(values.astype(np.int16), from_dicom.affine.numpy()), path)

    from_nifti = load_nifti(path, "CT")

    assert from_nifti.shape == from_dicom.shape and from_nifti.dtype == from_dicom.dtype == torch.int16  # whole HU
    assert from_nifti.is_contiguous()
    np.testing.assert_allclose(from_nifti.affine.numpy(), from_dicom.affine.numpy(), atol=1e-5)
    np.testing.assert_array_equal(from_nifti.numpy(), from_dicom.numpy())
    assert from_nifti.meta["modality"] == "CT" and from_nifti.meta["filename_or_obj"] == str(path)


def test_applies_scaling_and_squeezes_single_volume_4d(tmp_path: Path):
    image = nib.Nifti1Image(np.arange(24, dtype=np.int16).reshape(2, 3, 4, 1), np.eye(4))
    image.header.set_slope_inter(0.5, 10.0)
    nib.save(image, tmp_path / "pet.nii")
    volume = load_nifti(tmp_path / "pet.nii", "PT")
    assert volume.shape == (1, 2, 3, 4)
    np.testing.assert_allclose(volume[0].numpy(), np.arange(24).reshape(2, 3, 4) * 0.5 + 10.0)


# 20 slices: two blocks of the loader, so a fractional slice in the second turns int16 slices already read into float32.
WHOLE = np.random.default_rng(0).integers(-1000, 2000, size=(6, 5, 20)) * 2  # even: whole numbers at slope 0.5 too


def _one_fraction(values: np.ndarray) -> np.ndarray:
    values = values.astype(np.float32)
    values[2, 3, 18] += 0.5
    return values


@pytest.mark.parametrize(("modality", "values", "slope_inter", "dtype"), [
    ("CT", WHOLE.astype(np.int16), None, torch.int16),  # as converters store CT
    ("CT", WHOLE.astype(np.float32), None, torch.int16),  # whole HU stored as floats
    ("CT", (WHOLE + 1024).astype(np.int16), (0.5, -1024.0), torch.int16),  # a fractional slope whose products are whole
    ("CT", WHOLE.astype(np.int16) + 1, (0.5, -1024.0), torch.float32),  # odd values x 0.5: fractional HU
    ("CT", _one_fraction(WHOLE), None, torch.float32),  # one fractional voxel, in the second block
    ("CT", WHOLE.astype(np.float32) * 20, None, torch.float32),  # whole HU beyond int16's range
    ("PT", WHOLE.astype(np.int16), None, torch.float32),  # PET stays float32, whole or not
], ids=["int16", "whole-floats", "whole-products", "fractional-slope", "one-fractional-voxel", "beyond-int16", "pet"])
def test_the_loader_holds_whole_hu_as_int16_and_the_float32_values_to_the_bit(tmp_path: Path, modality, values,
                                                                             slope_inter, dtype):
    path = tmp_path / "volume.nii.gz"
    image = nib.Nifti1Image(values, np.diag([0.8, 0.8, 2.0, 1.0]))
    if slope_inter is not None:
        image.header.set_slope_inter(*slope_inter)
    nib.save(image, path)
    volume = load_nifti(path, modality)
    assert volume.dtype == dtype
    held = volume[0].numpy().astype(np.float32)  # as the CT windows read it
    whole_read = np.asarray(nib.load(path).dataobj, dtype=np.float32)  # nibabel's float32 volume
    np.testing.assert_array_equal(held.view(np.int32), whole_read.view(np.int32))


def test_rejects_2d(tmp_path: Path):
    nib.save(nib.Nifti1Image(np.zeros((4, 4), np.float32), np.eye(4)), tmp_path / "flat.nii.gz")
    with pytest.raises(InputError, match=r"flat\.nii\.gz: expected a 3-D volume"):
        load_nifti(tmp_path / "flat.nii.gz", "CT")


@pytest.mark.parametrize("content, problem", [(None, "file not found"), (b"garbage", "unreadable NIfTI"),
                                              ("truncated", "unreadable NIfTI")])
def test_bad_files(tmp_path: Path, content, problem):
    path = tmp_path / "bad.nii.gz"
    if content == "truncated":  # the header reads, the voxels end half-way
        nib.save(nib.Nifti1Image(np.random.default_rng(0).integers(-999, 999, (8, 8, 40), np.int16), np.eye(4)), path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError) as info:
        load_nifti(path, "CT")
    assert str(path) in str(info.value) and problem in str(info.value) and "\n" not in str(info.value)


def test_written_volume_round_trips(dicom_factory, tmp_path: Path):
    volume = load_series(dicom_factory.series("ct", modality="CT", origin=(5.0, 6.0, 7.0)))
    path = tmp_path / "out" / "fused.nii.gz"
    with NiftiSliceWriter(path, volume.shape[1:], volume.affine.numpy()) as writer:
        writer.write(volume[0].numpy())
    again = load_nifti(path, "CT")
    np.testing.assert_allclose(again.affine.numpy(), volume.affine.numpy(), atol=1e-5)
    np.testing.assert_array_equal(again.numpy(), volume.numpy())
    assert [p.name for p in path.parent.iterdir()] == ["fused.nii.gz"]  # no temporary left behind


def test_slab_writer_writes_the_file_save_nifti_writes(tmp_path: Path):
    volume = np.random.default_rng(0).random((7, 5, 9), dtype=np.float32)
    affine = np.diag([0.8, 0.9, 2.5, 1.0])
    affine[:3, 3] = (4.0, -3.0, 10.0)
    whole = save_nifti(tmp_path / "whole.nii.gz", volume, affine)
    with NiftiSliceWriter(tmp_path / "slabs.nii.gz", volume.shape, affine) as writer:
        for start, stop in ((0, 4), (4, 5), (5, 9)):  # uneven slabs
            writer.write(volume[..., start:stop])
    assert writer.path.read_bytes() == whole.read_bytes()


@pytest.mark.parametrize("name", ["fused.nii.gz", "fused.nii"])
def test_written_files_hold_what_nibabel_writes_with_a_name_and_time_free_gzip_header(tmp_path: Path, name: str):
    volume = np.random.default_rng(2).random((9, 7, 5), dtype=np.float32)
    affine = np.diag([0.7, 0.7, 3.0, 1.0])
    ours = save_nifti(tmp_path / "ours" / name, volume, affine)
    theirs = tmp_path / "theirs" / name
    theirs.parent.mkdir()
    image = nib.Nifti1Image(volume, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm")
    nib.save(image, theirs)  # zlib, through nibabel's own opener
    if name.endswith(".gz"):
        packed = ours.read_bytes()
        assert packed[3] & 0x08 == 0 and packed[4:8] == bytes(4)  # FLG.FNAME unset, MTIME 0
        assert gzip.decompress(packed) == gzip.decompress(theirs.read_bytes())
    else:
        assert ours.read_bytes() == theirs.read_bytes()
    np.testing.assert_array_equal(load_nifti(ours, "CT")[0].numpy(), volume)


@pytest.mark.parametrize("mistake", ["too_few", "wrong_plane", "exception"])
def test_slab_writer_leaves_nothing_when_the_volume_is_not_complete(tmp_path: Path, mistake: str):
    volume = np.zeros((4, 4, 6), dtype=np.float32)
    with pytest.raises((ValueError, RuntimeError)):
        with NiftiSliceWriter(tmp_path / "fused.nii.gz", volume.shape, np.eye(4)) as writer:
            writer.write(volume[..., :3] if mistake != "wrong_plane" else volume[:3])
            if mistake == "exception":
                raise RuntimeError("fusion failed half-way")
    assert list(tmp_path.iterdir()) == []


def _recorded_writes(monkeypatch: pytest.MonkeyPatch, fail_at: int | None = None) -> list[str]:
    """The names of the threads that wrote each slab's bytes to the open NIfTI file; with ``fail_at``, that slab's
    write fails as a full disk does."""
    threads: list[str] = []
    write = igzip.GzipFile.write

    def recording(opener: igzip.GzipFile, data: bytes) -> int:
        if len(data) > 1024:  # a slab, not the header or its padding
            threads.append(threading.current_thread().name)
            if len(threads) == fail_at:
                raise OSError(errno.ENOSPC, "No space left on device")
        return write(opener, data)

    monkeypatch.setattr(igzip.GzipFile, "write", recording)
    return threads


def test_slab_writer_compresses_off_the_callers_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    threads = _recorded_writes(monkeypatch)
    volume = np.random.default_rng(1).random((32, 24, 12), dtype=np.float32)
    with NiftiSliceWriter(tmp_path / "fused.nii.gz", volume.shape, np.eye(4)) as writer:
        for start in range(0, 12, 2):
            writer.write(volume[..., start : start + 2])
    assert len(threads) == 6 and all(name.startswith("nifti-writer") for name in threads)
    np.testing.assert_array_equal(load_nifti(writer.path, "CT")[0].numpy(), volume)


@pytest.mark.parametrize("fail_at", [1, 5])
def test_slab_writer_raises_a_failed_write_and_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               fail_at: int):
    _recorded_writes(monkeypatch, fail_at)
    volume = np.zeros((32, 24, 10), dtype=np.float32)
    with pytest.raises(OSError, match="No space left"):
        with NiftiSliceWriter(tmp_path / "fused.nii.gz", volume.shape, np.eye(4)) as writer:
            for start in range(0, 10, 2):
                writer.write(volume[..., start : start + 2])
    assert list(tmp_path.iterdir()) == []


def test_refuses_a_file_without_scanner_geometry(tmp_path: Path):
    """Both xform codes 0: nibabel's voxel-size fallback would place the volume mirrored front to back."""
    image = nib.Nifti1Image(np.zeros((4, 4, 3), np.float32), np.diag([-2.0, -2.0, 3.0, 1.0]))
    image.set_sform(None, code=0)
    image.set_qform(None, code=0)
    nib.save(image, tmp_path / "pet.nii.gz")
    with pytest.raises(InputError) as info:
        load_nifti(tmp_path / "pet.nii.gz", "PT")
    assert str(info.value) == f"{tmp_path / 'pet.nii.gz'}: no scanner geometry: qform and sform codes are 0"


@pytest.mark.parametrize("code", ["qform", "sform"])
def test_either_xform_code_is_enough(tmp_path: Path, code: str):
    affine = np.diag([-2.0, -2.0, 3.0, 1.0])
    image = nib.Nifti1Image(np.zeros((4, 4, 3), np.float32), None)
    getattr(image, f"set_{code}")(affine, code=1)
    nib.save(image, tmp_path / "ct.nii.gz")
    np.testing.assert_allclose(load_nifti(tmp_path / "ct.nii.gz", "CT").affine.numpy(), affine)


def _with_non_finite(tmp_path: Path) -> Path:
    values = np.ones((4, 4, 20), np.float32)  # two blocks of the loader: counted over both
    values[:, :, 0] = np.nan  # an end slice outside the field of view, as SPM and FSL write it
    values[0, 0, 19] = np.inf
    nib.save(nib.Nifti1Image(values, np.eye(4)), tmp_path / "vol.nii.gz")
    return tmp_path / "vol.nii.gz"


def test_non_finite_pet_voxels_become_zero_with_a_warning(tmp_path: Path, caplog):
    path = _with_non_finite(tmp_path)
    with caplog.at_level("WARNING", logger="pipeline.io.nifti"):
        volume = load_nifti(path, "PT")
    assert torch.isfinite(volume).all()
    assert int((volume == 0).sum()) == 17 and float(volume.sum()) == 320 - 17
    assert f"{path}: 17 of 320 PET voxels are NaN or infinite" in caplog.text


def test_non_finite_ct_voxels_are_refused(tmp_path: Path):
    path = _with_non_finite(tmp_path)
    with pytest.raises(InputError) as info:
        load_nifti(path, "CT")
    assert str(info.value).startswith(f"{path}: 17 of 320 voxels are NaN or infinite in a CT volume")


def _refusal(path: Path, modality: str = "CT") -> str:
    """The one-line InputError ``load_nifti`` refuses ``path`` with, numpy and Python warnings made errors."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(InputError) as info:
            load_nifti(path, modality)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    return message


def test_a_header_claiming_more_voxels_than_a_gz_file_can_inflate_to_is_refused_before_allocating(tmp_path: Path):
    """30000^3 int16 voxels (54 TB) in a few kB: torch's allocator failed on them, naming no file."""
    path = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4), np.int16), np.eye(4)), path)
    header = bytearray(gzip.decompress(path.read_bytes()))
    struct.pack_into("<hhhh", header, 40, 3, 30000, 30000, 30000)  # dim[0:4]
    path.write_bytes(gzip.compress(bytes(header)))
    assert _refusal(path) == (f"{path}: the header's (30000, 30000, 30000) int16 voxels take 54,000,000,000,352 "
                              f"bytes, more than the file's {path.stat().st_size:,} bytes can hold "
                              "(damaged dimensions or a truncated file)")


def test_an_uncompressed_file_must_hold_every_claimed_byte(tmp_path: Path):
    path = tmp_path / "ct.nii"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4), np.int16), np.eye(4)), path)
    path.write_bytes(path.read_bytes()[:-1])
    assert "int16 voxels take 864 bytes, more than the file's 863 bytes can hold" in _refusal(path)


def test_a_volume_the_file_holds_but_memory_does_not_is_refused_naming_the_file(tmp_path: Path,
                                                                                 monkeypatch: pytest.MonkeyPatch):
    def no_memory(shape: tuple[int, int, int], modality: str) -> None:
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory")

    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4), np.int16), np.eye(4)), tmp_path / "ct.nii.gz")
    monkeypatch.setattr(nifti, "VolumeFill", no_memory)
    assert _refusal(tmp_path / "ct.nii.gz") == f"{tmp_path / 'ct.nii.gz'}: a (8, 8, 4) CT volume does not fit in memory"


def test_a_non_finite_affine_is_refused(tmp_path: Path):
    """NaN in the sform ended in "SVD did not converge", naming no file."""
    image = nib.Nifti1Image(np.ones((4, 4, 3), np.float32), np.diag([2.0, 2.0, 3.0, 1.0]))
    image.header["srow_x"][0] = np.nan
    image.header["sform_code"] = 2
    image.header["qform_code"] = 0
    nib.Nifti1Image(image.dataobj, None, image.header).to_filename(tmp_path / "pet.nii.gz")
    assert _refusal(tmp_path / "pet.nii.gz", "PT").endswith(": sform affine is not finite (NaN or infinite values)")


@pytest.mark.parametrize(("form", "sizes", "problem"), [
    ("sform", (0.0, 0.0, 0.0), "sform spacing along i 0 mm"),  # was taken for a sheared affine, after numpy warnings
    ("sform", (1.5, 1.5, 3e6), "sform spacing along k 3e+06 mm"),
    ("qform", (1.5, 1e6, 3.0), "qform spacing along j 1e+06 mm"),
], ids=["zero", "metres-apart-slices", "qform"])
def test_a_voxel_size_no_scanner_writes_is_refused(tmp_path: Path, form: str, sizes: tuple[float, ...], problem: str):
    image = nib.Nifti1Image(np.zeros((4, 4, 3), np.int16), None)
    image.header.set_zooms((1.0, 1.0, 1.0))
    getattr(image, f"set_{form}")(np.diag([*sizes, 1.0]), code=1)
    nib.save(image, tmp_path / "ct.nii.gz")
    assert _refusal(tmp_path / "ct.nii.gz").endswith(f": {problem} is not a voxel size (0.01-50 mm)")


def test_complex_voxels_are_refused(tmp_path: Path):
    """Their imaginary part was dropped with a numpy ComplexWarning."""
    nib.save(nib.Nifti1Image(np.ones((4, 4, 3), np.complex64), np.eye(4)), tmp_path / "ct.nii.gz")
    assert _refusal(tmp_path / "ct.nii.gz").endswith(": complex64 voxels are not CT or PET intensities")
