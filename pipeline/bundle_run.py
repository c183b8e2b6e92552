"""What a ``python -m monai.bundle`` run of the bundle sets up, as early as it can: the bundle's configs import this.

MONAI evaluates a config's ``imports`` before any other expression of it: ``--tracking`` resolves ``output_dir`` to
create the folder of the executed config while it builds the workflow, before the config's ``initialize`` runs, and
an error there (an ``--output_dir`` that is a file) would end in a traceback. So importing this module, in a
``python -m monai.bundle`` process and only there (the CLI, the batch job and the deploy app read the same config),
ends errors in one line (:func:`pipeline.errors.one_line_errors`) and keeps local paths out of MONAI's echo of the
command's arguments (``> input: '/data/DOE_JOHN'``: hospital exports name study folders by patient).
:func:`preflight`, the configs' ``initialize``, refuses an unusable output folder or device before any study is read.
"""

from __future__ import annotations

import ast
import itertools
import logging
import os
import pprint
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from pipeline.errors import DcifError, one_line_errors
from pipeline.fusion.selection import check_device
from pipeline.io.atomic import output_folder

NOT_SHOWN = "<not shown>"
"""What MONAI's echo of an argument becomes where MONAI cut it short, so it cannot be read whole to redact."""


def preflight(output_dir: str | os.PathLike[str], device: str | torch.device) -> None:
    """Make ``output_dir`` and check ``device`` before any study is read; otherwise a file in the way of the output
    folder surfaced only once every study was fused, and a missing GPU as torch's ``AssertionError``."""
    folder = output_folder(Path(output_dir))
    if not os.access(folder, os.W_OK | os.X_OK):
        raise DcifError(f"{folder}: cannot use as output folder (not writable)")
    check_device(device)


class _RedactedArguments(logging.Filter):
    """Shows an argument MONAI echoes (``> name: value``) with the local paths in its value redacted."""

    def __init__(self, redact: Callable[[Any], Any]) -> None:
        super().__init__()
        self.redact = redact

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        name, colon, shown = message.partition(": ")
        if message.startswith("> ") and colon:
            record.msg, record.args = f"{name}: {self._redacted(shown)}", ()
        return True

    def _redacted(self, shown: str) -> str:
        """``shown`` (a value as ``pprint`` wrote it) redacted; as it was where it names no place."""
        try:
            value = ast.literal_eval(shown)
        except (ValueError, TypeError, SyntaxError):  # the middle of a long value left out
            return NOT_SHOWN
        hidden = self.redact(value)
        return shown if hidden == value else pprint.pformat(hidden)


def _bundle_command() -> str | None:
    """``monai.bundle run inference`` where this process is ``python -m monai.bundle run inference ...`` (the words
    before the first option), else None."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if getattr(spec, "name", None) != "monai.bundle.__main__":
        return None
    return " ".join(["monai.bundle", *itertools.takewhile(lambda word: not word.startswith("-"), sys.argv[1:])])


def _set_up(command: str) -> None:
    """One-line errors, and MONAI's echo of the arguments (``monai.bundle.scripts``' log) redacted."""
    # Imported here: it brings ignite and MLflow, which the other readers of the config do not need.
    from pipeline.handlers.mlflow_logging import redacted

    one_line_errors(command)
    logging.getLogger("monai.bundle.scripts").addFilter(_RedactedArguments(redacted))


if (_command := _bundle_command()) is not None:
    _set_up(_command)
