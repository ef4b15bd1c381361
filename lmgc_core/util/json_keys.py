"""JSON objects whose keys are each given once (``json.loads``' ``object_pairs_hook``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def unique_keys(complaint: Callable[[Any], Exception]) -> Callable[[list[tuple[Any, Any]]], dict]:
    """A hook that builds each object and raises ``complaint(key)`` for a key given twice:
    ``json.loads`` keeps a repeated key's last value without a word."""

    def hook(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        for key, value in pairs:
            if key in out:
                raise complaint(key)
            out[key] = value
        return out

    return hook
