"""Project exceptions.

Every entry point catches :class:`DcifError` and prints its one-line message, so a user sees
what is wrong and with which file instead of a traceback from deep inside a library.
"""

from __future__ import annotations

import logging
import os
import pickle
import sys
import zipfile
from pathlib import Path
from types import TracebackType


class DcifError(Exception):
    """Base class: a problem the user can act on, described in one line."""


class InputError(DcifError):
    """Input data is missing, unreadable, inconsistent or unsupported."""


class CheckpointError(DcifError):
    """A model checkpoint is missing or does not match the configured network."""


def one_line(text: object) -> str:
    """Collapse a (library) message to one line, since project errors must be one line."""
    return " ".join(str(text).split())


def error_line(error: BaseException, place: object = "output") -> str:
    """Any error in one line, for a report row or a last line on stderr: ours as they say it, an OS error (a full
    disk, an unwritable folder) as its file, else ``place``, and its problem, any other as its type and message."""
    if isinstance(error, DcifError):
        return one_line(error)
    if isinstance(error, OSError) and error.strerror:
        return f"{error.filename or place}: {error.strerror}"
    return f"{type(error).__name__}: {one_line(error)}"


def torch_file_problem(path: str | os.PathLike[str], error: BaseException, kind: str) -> str:
    """What is wrong with a file ``torch.load`` could not read, as a ``kind`` (checkpoint, training state) file:
    torch's own error says it in pages (weights_only's advice to load unsafely among them), or not at all (a text file
    gives an IndexError)."""
    if Path(path).stat().st_size == 0:
        return "empty file (0 bytes)"
    if isinstance(error, pickle.UnpicklingError) and zipfile.is_zipfile(path):  # torch.save's zip, refused objects
        return ("a PyTorch file holding Python objects besides tensors (a whole network saved?), not loaded as they "
                "could run code; save the network's state_dict() instead")
    return f"not a {kind} file"


TRACEBACK_ENV = "DCIF_TRACEBACK"
"""Set (to anything) to keep full tracebacks instead of one-line errors, for debugging."""


class _EngineAbortLine(logging.Filter):
    """Drops ignite's "... run is terminating due to exception: ..." lines, which say again, with an object's address,
    what the one-line error says."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "is terminating due to exception" not in record.getMessage()


def one_line_errors(program: str) -> None:
    """End an uncaught error in one line on stderr instead of a traceback, where we do not own the entry point.

    For ``python -m monai.bundle run``, whose parser wraps our errors in its own: the DcifError found
    in the chain of causes is printed, else the first error of the chain (the wrappers only say where
    it surfaced) as :func:`error_line` says it (an OS error as its file and problem), and ignite's log lines
    announcing the abort are left out; Ctrl-C is "interrupted", as ``dcif`` says it (it printed
    "error: KeyboardInterrupt: "). The exit status stays non-zero (130 after Ctrl-C). ``DCIF_TRACEBACK=1`` keeps the
    full traceback and those lines, for debugging.
    """
    if os.environ.get(TRACEBACK_ENV):
        return
    for handler in logging.getLogger().handlers:  # the bundle's logging.conf: one console handler on the root
        handler.addFilter(_EngineAbortLine())

    def hook(kind: type[BaseException], error: BaseException, traceback: TracebackType | None) -> None:
        if isinstance(error, KeyboardInterrupt):
            print(f"{program}: interrupted", file=sys.stderr)
            return
        chain = [error]
        while not isinstance(chain[-1], DcifError) and (chain[-1].__cause__ or chain[-1].__context__):
            chain.append(chain[-1].__cause__ or chain[-1].__context__)
        print(f"{program}: error: {error_line(chain[-1])}", file=sys.stderr)

    sys.excepthook = hook
