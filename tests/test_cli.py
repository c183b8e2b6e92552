"""``dcif``'s parsing: every command explains itself, and bad values stop at the parser with exit status 2."""

from __future__ import annotations

import pytest

from pipeline.cli import build_parser, main


@pytest.mark.parametrize("command", ["phantom", "inspect", "demo", "fuse-batch"])
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    assert "usage: dcif " + command in capsys.readouterr().out


def test_lists_sizes_and_filters_parse_as_the_help_says() -> None:
    args = build_parser().parse_args(["fuse-batch", "in", "out", "--window", "lung, mediastinal,", "--method", "max",
                                      "--query", "StudyDate=20260101-", "--workers", "2"])
    assert args.window == ["lung", "mediastinal"] and args.method == ["max"]
    assert args.query == [("StudyDate", "20260101-")] and args.workers == 2
    assert build_parser().parse_args(["fuse-batch", "in", "out"]).window is None  # then the data path's default
    phantom = build_parser().parse_args(["phantom", "out", "--size", "64,64,16", "--spacing", "6,6,8"])
    assert phantom.size == (64, 64, 16) and phantom.spacing == (6.0, 6.0, 8.0)


_ERRORS = {"0": "argument --workers: must be at least 1, got 0",
           "-1": "argument --metric-slices: must be at least 0, got -1",
           "StudyDate": "argument --query: expected KEY=VALUE, got 'StudyDate'",
           "64,64": "argument --size: expected three comma-separated values, got '64,64'"}


@pytest.mark.parametrize("argv", [
    ["fuse-batch", "in", "out", "--workers", "0"],
    ["fuse-batch", "in", "out", "--metric-slices", "-1"],
    ["fuse-batch", "in", "out", "--query", "StudyDate"],
    ["phantom", "out", "--size", "64,64"],
])
def test_bad_values_stop_at_the_parser_in_one_line(argv: list[str], capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as done:
        main(argv)
    command = " ".join(["dcif", argv[0]])
    assert done.value.code == 2
    assert capsys.readouterr().err.splitlines() == [f"{command}: error: {_ERRORS[argv[-1]]} (see {command} --help)"]
