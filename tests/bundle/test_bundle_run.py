"""What importing :mod:`pipeline.bundle_run` sets up: MONAI's executed config written redacted in any process, and
only in a ``python -m monai.bundle`` process, its echo of the command's arguments redacted."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from monai.bundle import ConfigParser, run

import pipeline.bundle_run
from pipeline.bundle_run import LOCAL_PATH, NOT_SHOWN, _bundle_command, _RedactedArguments, redacted

INFERENCE = Path(__file__).resolve().parents[2] / "bundles" / "dcif_gan" / "configs" / "inference.json"


def _echoed(message: str) -> str:
    """``message`` as MONAI's log of the command's arguments shows it, through the filter."""
    record = logging.LogRecord("monai.bundle.scripts", logging.INFO, __file__, 0, message, None, None)
    assert _RedactedArguments().filter(record)
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


def test_redaction_takes_every_place_and_keeps_prose(tmp_path, monkeypatch):
    """Every string holding a slash became "<local path>" (the bundle's name "DCIF-GAN PET/CT fusion", its
    changelog), while a relative folder named by a patient, without a slash, was logged as it is."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "DOE_JOHN").mkdir()
    config = {"input": "DOE_JOHN", "items": [{"ct": "DOE_JOHN"}], "absolute": str(tmp_path / "gone"),
              "home": "~/exports", "dot": "./exports", "windows": "C:\\exports\\x", "name": "DCIF-GAN PET/CT fusion",
              "expression": "$@bundle_root + '/models'", "url": "https://pacs.example/dicom-web", "epochs": 3}
    assert redacted(config) == {**config, "input": LOCAL_PATH, "items": [{"ct": LOCAL_PATH}], "absolute": LOCAL_PATH,
                                 "home": LOCAL_PATH, "dot": LOCAL_PATH, "windows": LOCAL_PATH}


def test_monais_config_writer_writes_local_paths_redacted(tmp_path):
    """The writer of the executed config, every DDP rank's: it was rewritten redacted only once an engine ran."""
    written = tmp_path / "config_20261207_180604.json"
    ConfigParser.export_config_file({"input": str(tmp_path / "DOE_JOHN"), "windows": ["lung"]}, written)
    assert json.loads(written.read_text()) == {"input": LOCAL_PATH, "windows": ["lung"]}


def test_a_run_interrupted_before_it_starts_leaves_only_a_redacted_executed_config(tmp_path, monkeypatch):
    """Ctrl-C in ``initialize``, right after ``--tracking`` wrote the config: no handler ever ran to redact it."""
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline.bundle_run, "preflight", interrupted)
    (tmp_path / "DOE_JOHN").mkdir()
    with pytest.raises(KeyboardInterrupt):
        run("inference", config_file=str(INFERENCE), input=str(tmp_path / "DOE_JOHN"),
            output_dir=str(tmp_path / "out"), method="laplacian", tracking="mlflow")

    (written,) = (tmp_path / "out").glob("config_*.json")
    config = json.loads(written.read_text())
    assert "DOE_JOHN" not in written.read_text() and config["input"] == LOCAL_PATH
    assert config["method"] == "laplacian"
