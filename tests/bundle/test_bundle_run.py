"""What importing :mod:`pipeline.bundle_run` sets up: only in a ``python -m monai.bundle`` process, whose echo of the
command's arguments it redacts."""

from __future__ import annotations

import logging
import sys
from types import SimpleNamespace

from pipeline.bundle_run import NOT_SHOWN, _bundle_command, _RedactedArguments
from pipeline.handlers.mlflow_logging import LOCAL_PATH, redacted


def _echoed(message: str) -> str:
    """``message`` as MONAI's log of the command's arguments shows it, through the filter."""
    record = logging.LogRecord("monai.bundle.scripts", logging.INFO, __file__, 0, message, None, None)
    assert _RedactedArguments(redacted).filter(record)
    return record.getMessage()


def test_an_argument_naming_a_local_place_is_redacted_and_others_are_kept(tmp_path):
    assert _echoed(f"> input: '{tmp_path / 'DOE_JOHN'}'") == f"> input: '{LOCAL_PATH}'"
    assert _echoed(f"> config_file: ['{tmp_path}', 'x.json']") == f"> config_file: ['{LOCAL_PATH}', 'x.json']"
    assert _echoed(f"> input: ('{tmp_path}',)") == f"> input: ('{LOCAL_PATH}',)"
    for kept in ("> windows: ['lung']", "> device: \"$torch.device('cuda')\"", "> every_k: 2", "---\n\n",
                 "--- input summary of monai.bundle.scripts.run ---"):
        assert _echoed(kept) == kept


def test_an_argument_monai_cut_short_is_not_shown():
    """``pprint_edges`` leaves out the middle of a long value: what is left cannot be read whole to redact."""
    assert _echoed("> input: [{'ct': '/data/DOE_JOHN/ct.nii'},\n\n ... omitted 9 line(s)\n\n 'x']") == \
        f"> input: {NOT_SHOWN}"


def test_only_a_monai_bundle_process_is_set_up(monkeypatch):
    """The CLI, the batch job and the deploy app read the same config, and keep their own error handling."""
    assert _bundle_command() is None
    main = SimpleNamespace(__spec__=SimpleNamespace(name="monai.bundle.__main__"))
    monkeypatch.setitem(sys.modules, "__main__", main)
    monkeypatch.setattr(sys, "argv", ["__main__.py", "run", "evaluate", "--config_file", "c.json"])
    assert _bundle_command() == "monai.bundle run evaluate"
