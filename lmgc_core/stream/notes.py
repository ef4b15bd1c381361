"""Notes beside a stream's pipeline data: extra keys in the container header.

A codec that codes an array through a view (:func:`lmgc_core.util.dtypes.coding_view`) records the
array's real dtype, shape and memory order under ``"view"``, so the stream alone rebuilds it.
The pipeline ignores header keys it does not know, so a noted stream is an ordinary stream.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lmgc_core.stream import container
from lmgc_core.util.dtypes import restore_view

VIEW_KEY = "view"


def add_notes(blob: bytes, notes: dict[str, Any]) -> bytes:
    """``blob`` with ``notes`` merged into its header (the blocks are copied unchanged, once)."""
    return b"".join(noted_parts(blob, notes))


def noted_parts(blob: bytes, notes: dict[str, Any]) -> tuple[bytes, memoryview]:
    """:func:`add_notes` as its new header and a view of ``blob``'s blocks, to be written one
    after the other without joining them (a 4 GiB stream was copied twice more)."""
    header, offset = container.read_header(blob)
    return container.pack({**header, **notes}, []), memoryview(blob)[offset:]


def with_view(blob: bytes, note: dict[str, Any] | None) -> bytes:
    return add_notes(blob, {VIEW_KEY: note}) if note else blob


def restore(header: dict[str, Any], arr: np.ndarray) -> np.ndarray:
    """The array a stream with ``header`` stands for, given its decoded (view) array."""
    return restore_view(arr, header.get(VIEW_KEY))
