"""How a count is worded wherever the product prints or records one: in its number ("1 study", "2 studies")."""

from __future__ import annotations


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """``count`` with ``noun`` in its number: "1 unreadable file", "2 studies" (``plural`` where adding an s is
    wrong)."""
    return f"{count} {noun if count == 1 else plural or noun + 's'}"
