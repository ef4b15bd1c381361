"""Text for a terminal."""

from __future__ import annotations

from typing import Any


def safe(text: Any) -> str:
    """``text`` for a terminal: printable characters as they are, anything else (control
    characters, escape sequences, unassigned code points, the surrogates that stand for a file
    name's undecodable bytes) escaped as ``repr`` would. A strict UTF-8 stdout refused such
    surrogates after the output was written (exit 1), and a name with an escape sequence
    drove the terminal."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
