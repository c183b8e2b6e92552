"""Project exceptions.

Every entry point catches :class:`DcifError` and prints its one-line message, so a user sees
what is wrong and with which file instead of a traceback from deep inside a library.
"""

from __future__ import annotations


class DcifError(Exception):
    """Base class: a problem the user can act on, described in one line."""


class InputError(DcifError):
    """Input data is missing, unreadable, inconsistent or unsupported."""


class CheckpointError(DcifError):
    """A model checkpoint is missing or does not match the configured network."""
