"""Atomic writes: the target is the old file or the new one; a temporary never passes for an output."""

from __future__ import annotations

from fnmatch import fnmatch
from pathlib import Path

import pytest

from pipeline.errors import InputError
from pipeline.io.atomic import (
    IDLE_TEMPORARY_S,
    PARTIAL_PATTERN,
    atomic_write,
    clear_partial_files,
    output_folder,
    temporary_sibling,
)
from tests.io.conftest import left_by_a_killed_run


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


@pytest.mark.parametrize("name", ["fused_dcif_gan_lung.nii.gz", "study.npz", "fused.json", "preview.png",
                                  "report.csv", "fused.dcm"])
def test_a_temporary_is_hidden_swept_and_never_ends_in_its_targets_extension(tmp_path: Path, name: str):
    """A viewer, ``rglob('*.nii.gz')`` or a forwarder watching for ``*.dcm`` or ``*.json`` never takes one for an
    output."""
    temporary = temporary_sibling(tmp_path / name)
    assert temporary.parent == tmp_path and temporary.name.startswith(".") and fnmatch(temporary.name, PARTIAL_PATTERN)
    assert temporary.name.endswith(f".partial.{name}.tmp")


def test_clear_partial_files_removes_a_killed_runs_temporaries_only(tmp_path: Path):
    leftovers = [temporary_sibling(tmp_path / "fused_laplacian_lung.nii.gz"), temporary_sibling(tmp_path / "fused.dcm"),
                 tmp_path / ".0123456789ab.partial.fused_laplacian_lung.nii.gz"]  # as earlier versions named them
    kept = [tmp_path / "fused_laplacian_lung.nii.gz", tmp_path / "notes.partial.txt",
            tmp_path / "sub" / leftovers[0].name]  # only the folder itself is swept
    for path in leftovers + kept:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"\x1f\x8b")
    clear_partial_files(tmp_path)
    assert sorted(path for path in tmp_path.rglob("*") if path.is_file()) == sorted(kept)
    clear_partial_files(tmp_path / "not made yet")  # a study folder no run has written: nothing to do


def test_a_sweep_without_a_lock_leaves_a_live_runs_temporary(tmp_path: Path):
    """Two runs writing into one folder at once (two demos, two deploy runs): one's sweep keeps the other's file."""
    killed = left_by_a_killed_run(temporary_sibling(tmp_path / "fused_laplacian_lung.nii.gz"))
    with atomic_write(tmp_path / "fused_laplacian_mediastinal.nii.gz") as live:
        live.write_bytes(b"being written")
        clear_partial_files(tmp_path, IDLE_TEMPORARY_S)
        assert live.exists() and not killed.exists()
    assert [path.name for path in tmp_path.iterdir()] == ["fused_laplacian_mediastinal.nii.gz"]


def test_an_output_folder_is_made_or_refused_in_one_line(tmp_path: Path):
    assert output_folder(tmp_path / "a" / "b").is_dir()
    (tmp_path / "file").write_text("")
    for folder, reason in ((tmp_path / "file", "not a folder"), (tmp_path / "file" / "out", "Not a directory")):
        with pytest.raises(InputError) as error:
            output_folder(folder)
        assert str(error.value) == f"{folder}: cannot use as output folder ({reason})"
