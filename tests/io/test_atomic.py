"""Atomic writes: the target is the old file or the new one; a temporary never passes for an output."""

from __future__ import annotations

from fnmatch import fnmatch
from pathlib import Path

import numpy as np
import pytest

from pipeline.io.atomic import PARTIAL_PATTERN, atomic_write, clear_partial_files, temporary_sibling


def test_atomic_write_replaces_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "volume.nii.gz"
    target.write_text("old")
    with atomic_write(target) as temporary:
        assert temporary.parent == tmp_path and temporary != target
        temporary.write_text("new")
        assert target.read_text() == "old"
    assert target.read_text() == "new"
    with pytest.raises(RuntimeError), atomic_write(target) as temporary:
        temporary.write_text("torn")
        raise RuntimeError("writer failed")
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["volume.nii.gz"]


@pytest.mark.parametrize(("name", "keep_extension", "ending"), [
    ("fused_dcif_gan_lung.nii.gz", True, ".nii.tmp.gz"),  # the NIfTI writer gzips by the name's ".gz"
    ("study.npz", True, ".tmp.npz"),  # numpy's savez adds ".npz" to a name without it
    ("done.json", True, ".tmp.json"),
    ("fused.dcm", False, ".dcm.tmp"),
])
def test_a_temporary_is_hidden_swept_and_never_ends_in_its_targets_extension(tmp_path: Path, name: str,
                                                                             keep_extension: bool, ending: str):
    """A viewer, ``rglob('*.nii.gz')`` or a forwarder watching for ``*.dcm`` never takes one for an output."""
    temporary = temporary_sibling(tmp_path / name, keep_extension)
    assert temporary.parent == tmp_path and temporary.name.startswith(".") and fnmatch(temporary.name, PARTIAL_PATTERN)
    assert temporary.name.endswith(ending) and not temporary.name.endswith(name)


def test_a_writer_that_picks_its_format_by_suffix_still_writes_the_target(tmp_path: Path):
    with atomic_write(tmp_path / "study.npz") as temporary:
        np.savez_compressed(temporary, image=np.arange(3))
    assert [path.name for path in tmp_path.iterdir()] == ["study.npz"]
    np.testing.assert_array_equal(np.load(tmp_path / "study.npz")["image"], np.arange(3))


def test_clear_partial_files_removes_a_killed_runs_temporaries_only(tmp_path: Path):
    leftovers = [temporary_sibling(tmp_path / "fused_laplacian_lung.nii.gz"),
                 temporary_sibling(tmp_path / "fused.dcm", keep_extension=False),
                 tmp_path / ".0123456789ab.partial.fused_laplacian_lung.nii.gz"]  # as earlier versions named them
    kept = [tmp_path / "fused_laplacian_lung.nii.gz", tmp_path / "notes.partial.txt",
            tmp_path / "sub" / leftovers[0].name]  # only the folder itself is swept
    for path in leftovers + kept:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"\x1f\x8b")
    clear_partial_files(tmp_path)
    assert sorted(path for path in tmp_path.rglob("*") if path.is_file()) == sorted(kept)
    clear_partial_files(tmp_path / "not made yet")  # a study folder no run has written: nothing to do
