"""Errors end in one line where we do not own the entry point (``python -m monai.bundle run``)."""

from __future__ import annotations

import logging
import sys

import pytest

from pipeline.errors import InputError, one_line_errors


@pytest.fixture
def hook(monkeypatch):
    """The excepthook :func:`one_line_errors` installs, put back afterwards."""
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    monkeypatch.setattr(logging.getLogger(), "handlers", [])  # it filters the console's: none here
    monkeypatch.delenv("DCIF_TRACEBACK", raising=False)
    one_line_errors("monai.bundle run training")
    return sys.excepthook


def test_ctrl_c_is_one_word(hook, capsys):
    """It printed "error: KeyboardInterrupt: " (the interrupt has no message)."""
    hook(KeyboardInterrupt, KeyboardInterrupt(), None)
    assert capsys.readouterr().err == "monai.bundle run training: interrupted\n"


def test_our_error_is_found_behind_the_wrappers(hook, capsys):
    ours = InputError("/data/x.dcm: not a DICOM file")
    try:
        try:
            raise ours
        except InputError as error:
            raise RuntimeError("Failed to evaluate ConfigExpression") from error
    except RuntimeError as wrapped:
        hook(RuntimeError, wrapped, wrapped.__traceback__)
    assert capsys.readouterr().err == "monai.bundle run training: error: /data/x.dcm: not a DICOM file\n"
