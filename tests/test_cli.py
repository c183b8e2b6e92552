"""``dcif``'s parsing: every command explains itself, and bad values stop at the parser with exit status 2."""

from __future__ import annotations

import errno
import subprocess
import sys
from pathlib import Path

import pytest

import pipeline.phantom
from pipeline.cli import build_parser, main
from pipeline.errors import TRACEBACK_ENV
from pipeline.transforms.windowing import DEFAULT_SUV_MAX


@pytest.mark.parametrize("command", ["phantom", "inspect", "demo", "fuse-batch"])
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert "usage: dcif " + command in text
    assert "-v, --verbose" in text and "-q, --quiet" in text  # taken after the command too, so listed there


@pytest.mark.parametrize("argv", [["-v", "-q", "fuse-batch", "in", "out"], ["fuse-batch", "in", "out", "-v", "-q"],
                                  ["-q", "fuse-batch", "in", "out", "-v"], ["-v", "phantom", "out", "--quiet"]])
def test_verbose_and_quiet_are_taken_before_or_after_the_command(argv: list[str]) -> None:
    """`dcif fuse-batch IN OUT -q` failed with "unrecognized arguments: -q"."""
    args = build_parser().parse_args(argv)
    assert args.verbose and args.quiet


def test_verbose_or_quiet_before_the_command_stands_when_not_given_after() -> None:
    args = build_parser().parse_args(["-q", "inspect", "in"])
    assert args.quiet and not args.verbose
    args = build_parser().parse_args(["demo"])
    assert not args.verbose and not args.quiet


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
           "64,64": "argument --size: expected three positive comma-separated values, got '64,64'",
           "-5,10,10": "argument --size: expected three positive comma-separated values, got '-5,10,10'",
           "-1,1,1": "argument --spacing: expected three positive comma-separated values, got '-1,1,1'",
           "lung,lung": "argument --window: lung given more than once in 'lung,lung'",
           ",": "argument --window: expected at least one name, got ','"}


@pytest.mark.parametrize("argv", [
    ["fuse-batch", "in", "out", "--workers", "0"],
    ["fuse-batch", "in", "out", "--metric-slices", "-1"],
    ["fuse-batch", "in", "out", "--query", "StudyDate"],
    ["phantom", "out", "--size", "64,64"],
    ["phantom", "out", "--size", "-5,10,10"],  # a value, not an unknown option: "expected one argument" said nothing
    ["phantom", "out", "--spacing", "-1,1,1"],
    ["demo", "out", "--window", "lung,lung"],  # would be fused, and listed, twice
    ["fuse-batch", "in", "out", "--window", ","],  # would fall back to the default windows unsaid
])
def test_bad_values_stop_at_the_parser_in_one_line(argv: list[str], capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as done:
        main(argv)
    command = " ".join(["dcif", argv[0]])
    assert done.value.code == 2
    assert capsys.readouterr().err.splitlines() == [f"{command}: error: {_ERRORS[argv[-1]]} (see {command} --help)"]


def test_fuse_batch_help_names_the_suv_ceiling_and_the_colour_series(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["fuse-batch", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"(default {DEFAULT_SUV_MAX:g}, the data path's" in text
    assert "colour_<method>_<window>/" in text


def _error_line(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    """The one line on stderr of a ``dcif`` call that must exit with status 2."""
    assert main(argv) == 2
    (line,) = capsys.readouterr().err.splitlines()
    return line


def test_a_file_where_a_folder_belongs_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    file = tmp_path / "file"
    file.write_text("")
    assert _error_line(["-q", "phantom", str(file)], capsys) == \
        f"dcif phantom: error: {file}: cannot use as output folder (not a folder)"
    assert _error_line(["-q", "phantom", str(file / "out")], capsys) == \
        f"dcif phantom: error: {file / 'out'}: cannot use as output folder (Not a directory)"
    assert _error_line(["inspect", str(file)], capsys) == f"dcif inspect: error: {file}: not a folder"
    assert _error_line(["-q", "fuse-batch", str(file), str(tmp_path / "out")], capsys) == \
        f"dcif fuse-batch: error: {file}: not a folder"


def test_fuse_batch_refuses_the_options_its_input_would_ignore(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """--query and --store filter and store a PACS's studies, --report-paths names an export's files: given with the
    other kind of input they were dropped in silence, and a folder batch exited 0 unfiltered and stored nowhere."""
    (tmp_path / "in").mkdir()
    for option in (["--store"], ["--query", "PatientID=X"]):
        assert _error_line(["-q", "fuse-batch", str(tmp_path / "in"), str(tmp_path / "out"), *option], capsys) == \
            f"dcif fuse-batch: error: {option[0]}: only with a DICOMweb URL as IN_DIR; a folder is fused whole and " \
            "nothing is sent to a PACS"
    assert _error_line(["-q", "fuse-batch", "http://127.0.0.1:9/dicom-web", str(tmp_path / "out"), "--report-paths"],
                       capsys).startswith("dcif fuse-batch: error: --report-paths: only with a folder IN_DIR;")
    # --address reaches a Ray cluster: with the local executor it was dropped, and the batch ran on this machine.
    for executor in ([], ["--executor", "local"]):
        assert _error_line(["-q", "fuse-batch", str(tmp_path / "in"), str(tmp_path / "out"), "--address", "1.2.3.4:1",
                            *executor], capsys) == \
            "dcif fuse-batch: error: --address: only with --executor ray; the local executor fuses on this machine"
    assert not (tmp_path / "out").exists()


def test_a_missing_input_folder_makes_no_output_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A mistyped IN_DIR created OUT_DIR, with its lock and location key, before failing."""
    assert _error_line(["-q", "fuse-batch", str(tmp_path / "nowhere"), str(tmp_path / "out")], capsys) == \
        f"dcif fuse-batch: error: {tmp_path / 'nowhere'}: folder not found"
    assert not (tmp_path / "out").exists()


def test_fuse_batch_help_names_its_arguments_and_exit_statuses(capsys: pytest.CaptureFixture) -> None:
    """The usage line said out_dir where the text says OUT_DIR, and the text left out Ctrl-C's 130."""
    with pytest.raises(SystemExit):
        main(["fuse-batch", "--help"])
    text = capsys.readouterr().out
    usage = text.split("\n\n")[0]
    assert "OUT_DIR" in usage and "out_dir" not in usage
    assert "130 when interrupted" in " ".join(text.split())


def test_an_os_error_no_command_foresaw_is_one_line_unless_tracebacks_are_asked_for(
        capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    def full_disk(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", "out/dicom/CT/ct_0003.dcm")

    monkeypatch.setattr(pipeline.phantom, "make_phantom", full_disk)
    assert _error_line(["phantom", "out"], capsys) == \
        "dcif phantom: error: out/dicom/CT/ct_0003.dcm: No space left on device"
    monkeypatch.setenv(TRACEBACK_ENV, "1")
    with pytest.raises(OSError, match="No space left"):
        main(["phantom", "out"])


def test_a_reader_that_leaves_the_pipe_ends_the_command_quietly() -> None:
    """`dcif inspect TREE | head -1`: the status of a process SIGPIPE ended, and no error line (it was
    'output: Broken pipe', exit 2)."""
    script = ("import sys, pipeline.cli as cli\n"
              "def endless(args):\n    while True:\n        print('study ' * 100)\n"
              "cli.cmd_inspect = endless\nsys.exit(cli.main(['inspect', '.']))")
    reader = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    reader.stdout.read(10)
    reader.stdout.close()  # as head does once it has its line
    assert reader.wait(timeout=120) == 141 and reader.stderr.read() == b""
