"""What a run of the bundle's config sets up, as early as it can: the bundle's configs import this.

MONAI evaluates a config's ``imports`` before any other expression of it: ``--tracking`` resolves ``output_dir``
while it builds the workflow, to make the folder of the executed config, and only then writes that config, before
the config's ``initialize`` runs. So, once imported:

- in any process that runs the bundle (``python -m monai.bundle`` or ``monai.bundle.run`` called in-process), MONAI
  writes the executed config with its local paths redacted (:func:`redacted`): it holds the command's ``--input``, and
  hospital exports name study folders by patient. Redacted as it is written, no unredacted copy is ever on disk for a
  failed, interrupted or killed run to leave behind, or for MLflow to upload;
- in a ``python -m monai.bundle`` process only (the CLI, the batch job and the deploy app read the same config and keep
  their own error handling), errors end in one line (:func:`pipeline.errors.one_line_errors`; an ``--output_dir``
  that is a file would end in a traceback) and MONAI's echo of the command's arguments shows no local path
  (``> input: '/data/DOE_JOHN'``).

:func:`preflight`, the configs' ``initialize``, refuses an unusable output folder or device before any study is read;
:func:`without_study_cache`, inference's first step, a study cache.
"""

from __future__ import annotations

import ast
import itertools
import logging
import os
import pprint
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigParser

from pipeline.errors import DcifError, InputError, one_line_errors
from pipeline.fusion.selection import check_device
from pipeline.io.atomic import output_folder

LOCAL_PATH = "<local path>"
"""What a string naming a local file or folder becomes."""

NOT_SHOWN = "<not shown>"
"""What MONAI's echo of an argument becomes where MONAI cut it short, so it cannot be read whole to redact."""

_PATH_STARTS = ("/", "~", "./", "../")


def _names_a_place(text: str) -> bool:
    """Whether ``text`` is a location on this machine: absolute, home- or dot-relative, Windows-style, or an existing
    file or folder (relative ones included: ``--input DOE_JOHN``). Prose such as "PET/CT fusion" is not."""
    if text.startswith(_PATH_STARTS) or "\\" in text:
        return True
    try:
        return bool(text) and Path(text).exists()
    except (OSError, ValueError):  # too long a name, a NUL: no file of that name
        return False


def redacted(value: Any) -> Any:
    """``value`` with every string that names a local file or folder replaced by :data:`LOCAL_PATH`, where
    hospital exports name folders by patient. Config expressions (``$...``, ``@...``, ``%...``) and http(s) URLs are
    kept, and so is text that merely holds a slash (the bundle's name, its changelog)."""
    if isinstance(value, Mapping):
        return {key: redacted(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):  # tuples: MONAI's echo of the command's arguments
        return type(value)(redacted(item) for item in value)
    if isinstance(value, str) and not value.startswith(("$", "@", "%", "http://", "https://")) and _names_a_place(value):
        return LOCAL_PATH
    return value


def _write_configs_redacted() -> None:
    """Make ``ConfigParser.export_config_file``, MONAI's writer of the executed config
    (``ConfigWorkflow.patch_bundle_tracking``, every DDP rank's too), write the config :func:`redacted`. The config's
    own setting cannot: MONAI takes ``save_execute_config`` as a literal file name, never evaluated. A file named by
    ``--save_execute_config PATH`` is written before MONAI resolves anything, so before this module is imported."""
    export = ConfigParser.export_config_file

    def export_redacted(cls: type[ConfigParser], config: dict, filepath: str | os.PathLike[str], *args: Any,
                        **kwargs: Any) -> None:
        export(redacted(config), filepath, *args, **kwargs)

    ConfigParser.export_config_file = classmethod(export_redacted)  # type: ignore[method-assign, assignment]


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < float("inf")


SETTINGS: dict[str, tuple[Callable[[Any], bool], str]] = {
    **{name: (_count, "a whole number, 1 or more") for name in (
        "every_k", "sw_batch_size", "epochs", "val_interval", "batch_size", "crop_size", "phantom_studies")},
    **{name: (_positive, "a number above 0") for name in ("suv_max", "lr_g", "lr_d")},
    **{name: (lambda value: value is None or _positive(value), "a number above 0, or null") for name in (
        "pet_factor", "pet_weight_kg", "pet_dose_bq", "time_limit_s")},
}
"""What each numeric setting a user overrides (``--every_k 2``) must be, as the check's words say it."""


def check_settings(settings: Mapping[str, Any]) -> None:
    """Refuse a setting :data:`SETTINGS` knows that is not what it must be, in one line naming the option: MONAI
    passes ``--every_k abc`` on as text, which ended in "'<' not supported between instances of 'str' and 'int'",
    and ``--suv_max 0`` as "width must be positive"."""
    for name, value in settings.items():
        valid, meaning = SETTINGS[name]
        if not valid(value):
            raise InputError(f"--{name} {value!r}: must be {meaning}")


def preflight(output_dir: str | os.PathLike[str], device: str | torch.device,
              settings: Mapping[str, Any] | None = None) -> None:
    """Check the numeric ``settings`` (:func:`check_settings`), make ``output_dir`` and check ``device`` before any
    study is read; otherwise a file in the way of the output folder surfaced only once every study was fused, and a
    missing GPU as torch's ``AssertionError``."""
    check_settings(settings or {})
    folder = output_folder(Path(output_dir))
    if not os.access(folder, os.W_OK | os.X_OK):
        raise DcifError(f"{folder}: cannot use as output folder (not writable)")
    check_device(device)


def without_study_cache(study_cache: str | os.PathLike[str] | None) -> None:
    """Inference's refusal of ``--study_cache``, before any study is read.

    Inference writes each study's fused volumes on its CT grid, with a record that passes them for the study's
    fusion; a cache holds only the network input (8-bit, every k-th slice of a real study, no CT), which training and
    evaluation read.
    """
    if study_cache is not None:
        raise InputError(f"{study_cache}: a study cache holds only the network input (8 bits, no CT to write fused "
                         "volumes on): inference fuses studies from their files (--input); evaluate scores a cache")


class _RedactedArguments(logging.Filter):
    """Shows an argument MONAI echoes (``> name: value``) with the local paths in its value redacted."""

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
        hidden = redacted(value)
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
    one_line_errors(command)
    logging.getLogger("monai.bundle.scripts").addFilter(_RedactedArguments())


_write_configs_redacted()
if (_command := _bundle_command()) is not None:
    _set_up(_command)
