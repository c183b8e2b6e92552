"""Building the training set: an unusable output folder is one line, before any phantom is made."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def build(load_tool):
    return load_tool("build_training_set")


@pytest.mark.parametrize(("out", "problem"), [("", "not a folder"), ("cache", "Not a directory")])
def test_an_output_folder_that_cannot_be_made_is_one_line_before_any_phantom_is_made(build, tmp_path, capsys, out,
                                                                                     problem):
    """An existing file as --out ended in FileExistsError's traceback, after the phantoms were made."""
    in_the_way = tmp_path / "afile"
    in_the_way.write_text("")
    with pytest.raises(SystemExit) as exited:
        build.main(["--out", str(in_the_way / out), "--real", "none", "--phantom-root", str(tmp_path / "phantoms")])
    assert exited.value.code == 1
    assert capsys.readouterr().err == (f"build_training_set: {in_the_way / out}: cannot use as output folder "
                                       f"({problem})\n")
    assert not (tmp_path / "phantoms").exists()
