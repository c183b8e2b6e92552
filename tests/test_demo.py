"""The main job on the embedded default data, on a tiny phantom so it takes seconds."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from pipeline.demo import run_demo
from pipeline.errors import DcifError
from pipeline.fusion import selection


@pytest.fixture
def demo_dir(tmp_path: Path, tiny_phantom_root: Path) -> Path:
    """An output folder whose phantom study is already there (the demo makes a full-size one otherwise)."""
    shutil.copytree(tiny_phantom_root / "seed_000", tmp_path / "phantom")
    return tmp_path


def test_the_default_method_is_named(demo_dir, capsys, monkeypatch):
    monkeypatch.setattr(selection, "MODEL_IS_DEFAULT", False)
    run_demo(demo_dir, windows=("lung",), progress=False)
    summary = capsys.readouterr().out
    assert f"fusion: {selection.BASELINE_FALLBACK} on" in summary
    (volume,) = (demo_dir / "fused").rglob("*.nii.gz")
    assert volume.name == f"fused_{selection.BASELINE_FALLBACK}_lung.nii.gz"


def test_a_method_asked_for_is_used(demo_dir, capsys):
    run_demo(demo_dir, windows=("mediastinal",), method="dwt", progress=False)
    summary = capsys.readouterr().out
    assert "fusion: dwt on" in summary
    assert [path.name for path in (demo_dir / "fused").rglob("*.nii.gz")] == ["fused_dwt_mediastinal.nii.gz"]


@pytest.mark.parametrize(("options", "problem"), [
    (dict(method="nosuch"), "unknown fusion method 'nosuch'"),
    (dict(windows=("bone",)), r"unknown CT window\(s\) \['bone'\]"),
    (dict(windows=()), r"unknown CT window\(s\) \(none given\)"),
])
def test_bad_settings_are_refused_before_the_phantom_is_made(tmp_path: Path, options: dict, problem: str) -> None:
    with pytest.raises(DcifError, match=problem):
        run_demo(tmp_path / "demo", progress=False, **options)
    assert not (tmp_path / "demo").exists()


@pytest.mark.parametrize("file", ["demo", "demo/fused"])
def test_an_output_folder_that_is_a_file_is_refused_before_the_phantom_is_made(tmp_path: Path, file: str) -> None:
    taken = tmp_path / file
    taken.parent.mkdir(exist_ok=True)
    taken.write_text("")
    with pytest.raises(DcifError, match=re.escape(f"{taken}: cannot use as output folder (not a folder)")):
        run_demo(tmp_path / "demo", method="laplacian", progress=False)
    assert not (tmp_path / "demo" / "phantom").exists()
