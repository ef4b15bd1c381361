"""Streams lmgc wrote before archives had a manifest (stream format 1, from the committed
fixture ``tests/fixtures/archive-v0/npz-stored.lmgc``): what a zip without a manifest holds.
The reader refuses a manifest-less zip of newer streams (its manifest was lost), so tests of
such zips build them from these."""

from __future__ import annotations

import zipfile
from functools import cache
from pathlib import Path

import numpy as np

from lmgc_core import decompress

FIXTURE = Path(__file__).parents[1] / "fixtures" / "archive-v0" / "npz-stored.lmgc"


@cache
def _members() -> dict[str, bytes]:
    with zipfile.ZipFile(FIXTURE) as z:
        return {name[: -len(".lmgc")]: z.read(name) for name in z.namelist()}


def old_stream(name: str = "w") -> bytes:
    """A format-1 stream: ``w`` float32 (8, 16), ``b`` int64 (4,), ``h`` float16 (3,)."""
    blob = _members()[name]
    assert blob[:5] == b"LMGC\x01"
    return blob


def old_array(name: str = "w") -> np.ndarray:
    return decompress(old_stream(name))
