"""A loaded CT is int16 while its blocks of slices are whole numbers in range, float32 from the first that is not, with
the same values either way; loading one holds about 2 bytes a voxel."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.io.nifti import save_nifti
from pipeline.io.volume_fill import VolumeFill
from tests.io.conftest import write_series

WHOLE = np.tile(np.float32([-1024.0, 0.0, 7.0, 3071.0, -32768.0, 32767.0]), 20).reshape(2, 3, 20)


def _filled(values: np.ndarray, modality: str = "CT") -> torch.Tensor:
    """``values`` put in blocks of 7, 7 and 6 slices, each laid out (slice, row, column) as the DICOM loader decodes."""
    volume = VolumeFill(values.shape, modality)
    for start in range(0, values.shape[2], 7):
        volume.put(np.ascontiguousarray(values[..., start : start + 7].transpose(2, 1, 0)).transpose(2, 1, 0))
    return volume.voxels


@pytest.mark.parametrize(("late", "dtype"), [(40.0, torch.int16), (0.5, torch.float32), (32768.0, torch.float32),
                                             (-32769.0, torch.float32), (np.nan, torch.float32)])
def test_blocks_are_int16_while_whole_and_float32_from_the_first_that_is_not(late: float, dtype: torch.dtype):
    values = WHOLE.copy()
    values[1, 2, 16] = late  # in the third block: the first two were put as int16
    voxels = _filled(values)
    assert voxels.shape == (1, 2, 3, 20) and voxels.dtype == dtype and voxels.is_contiguous()
    np.testing.assert_array_equal(voxels[0].float().numpy(), values)


def test_only_ct_is_held_as_int16():
    assert _filled(WHOLE, "PT").dtype == torch.float32 and _filled(WHOLE, "CT").dtype == torch.int16


# Run in a fresh interpreter: the CPU forward of another test keeps freed memory in the process
# (pipeline.networks.cpu_allocator), where a volume could then be allocated without raising the resident size.
PROBE = """
import json, sys
from pathlib import Path
from pipeline.io.dicom import load_series
from pipeline.io.nifti import load_nifti
def status_bytes(field):
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith(field + ":"))
    return int(line.split()[1]) * 1024
def peak(load, source):
    Path("/proc/self/clear_refs").write_text("5")  # restart VmHWM from the current resident size
    before = status_bytes("VmRSS")
    volume = load(source)
    return {"dtype": str(volume.dtype), "bytes_per_voxel": (status_bytes("VmHWM") - before) / volume.numel()}
root = Path(sys.argv[1])
load_series(root / "warm"), load_nifti(root / "warm.nii.gz", "CT")  # what a first load imports
print(json.dumps({"dicom": peak(load_series, root / "ct"),
                  "nifti": peak(lambda path: load_nifti(path, "CT"), root / "ct.nii.gz")}))
"""


@pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK), reason="Linux's /proc resets the peak resident")
def test_loading_a_whole_hu_ct_holds_about_two_bytes_a_voxel(tmp_path: Path):
    """Peak resident size of the load above what it started from: about 2.5 bytes a voxel for either loader (a float32
    volume alone is 4; the loaders that read float32 first peaked at 4.5 for DICOM and 8.5 for NIfTI here)."""
    hu = np.broadcast_to(np.arange(256.0) - 1000.0, (256, 256, 256))  # 64 MiB in float32, 32 MiB in int16
    write_series(tmp_path / "ct", hu)
    write_series(tmp_path / "warm", hu[..., :2])
    save_nifti(tmp_path / "ct.nii.gz", hu.astype(np.int16), np.eye(4))
    save_nifti(tmp_path / "warm.nii.gz", hu[..., :2].astype(np.int16), np.eye(4))
    done = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path)], capture_output=True, text=True, check=True)
    peaks = json.loads(done.stdout.strip().splitlines()[-1])
    for loader in ("dicom", "nifti"):
        assert peaks[loader]["dtype"] == "torch.int16"
        assert peaks[loader]["bytes_per_voxel"] < 3.5, peaks
