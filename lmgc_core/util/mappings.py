"""``isinstance(value, Mapping)`` for the hot paths that read stream headers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def is_mapping(value: Any) -> bool:
    """``isinstance(value, Mapping)``, answered first for a dict (every object a header's JSON
    holds) without the ABC's check, which costs ~0.2 us: a small tensor's decode asks a dozen
    times."""
    return type(value) is dict or isinstance(value, Mapping)
