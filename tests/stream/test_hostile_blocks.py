"""Streams whose blocks a hostile writer changed and then gave matching CRC32s (the header's
list rewritten and packed again), so that every decoder behind the container (the fast level,
the adaptive level 2, the delta coder, integer blocks) sees the changed bytes. Each decode must
raise an LMGCError or give the original array bit for bit: the checksums of the values (each
block's XXH3-128, the array's SHA-256) are what stands between such a block and a wrong
output. ``scripts/sanitize.sh`` runs this with many more cases and the C kernels built under
AddressSanitizer and UndefinedBehaviorSanitizer."""

from __future__ import annotations

import random
import zlib

import ml_dtypes
import numpy as np
import pytest

from lmgc_core import LMGCError, Pipeline, decompress
from lmgc_core.stream import container
from tests.fuzzing import fuzz_cases, mutate

MUTANTS = 12
"""Hostile streams made from each coded one."""
DTYPES = [np.float32, ml_dtypes.bfloat16, np.float16, np.float64, ml_dtypes.float8_e4m3fn,
          np.int16, np.uint8]  # fmt: skip


def _array(rng: random.Random, nrng: np.random.Generator) -> np.ndarray:
    """A small 2-D array of one of :data:`DTYPES`, with zeros and specials at random."""
    shape = (rng.choice([1, 3, 16, 40]), rng.choice([1, 7, 32, 33, 300]))
    arr = nrng.normal(0, 10 ** rng.uniform(-4, 1), shape).astype(np.float32)
    if rng.random() < 0.4:
        arr[nrng.random(shape) < rng.random()] = 0
    if rng.random() < 0.2:
        arr.flat[rng.randrange(arr.size)] = rng.choice([np.inf, np.nan, -0.0, 1e-42])
    dtype = rng.choice(DTYPES)
    if np.dtype(dtype).kind in "iu":
        info = np.iinfo(dtype)
        arr = np.clip(arr * 1000, info.min, info.max)
    with np.errstate(all="ignore"):
        return arr.astype(dtype)


def _update(arr: np.ndarray, nrng: np.random.Generator) -> np.ndarray:
    """``arr`` with the low bits of about a third of its values changed (a delta's new side)."""
    bits = arr.view(f"u{arr.itemsize}").copy()
    moved = nrng.random(arr.shape) < 0.3
    low = nrng.integers(0, 1 << min(8 * arr.itemsize, 16), int(moved.sum()))
    bits[moved] ^= low.astype(bits.dtype)
    return bits.view(arr.dtype)


def _resealed(header: dict, blocks: list[bytes]) -> bytes:
    """The stream of ``blocks`` under ``header`` with each block's size and CRC32 made right."""
    parts, at = [], 0
    for part in header["parts"]:
        count = len(part["blocks"])
        sealed = [[len(b), zlib.crc32(b)] for b in blocks[at : at + count]]
        parts.append({**part, "blocks": sealed})
        at += count
    return container.pack({**header, "parts": parts}, blocks)


@pytest.mark.parametrize("seed", range(4))
def test_resealed_changed_blocks_are_refused_or_decode_exactly(seed):
    rng, nrng = random.Random(seed), np.random.default_rng(seed)
    refused = 0
    for _ in range(fuzz_cases(40)):
        arr, level = _array(rng, nrng), rng.choice([1, 2])
        base = arr if rng.random() < 0.4 and arr.dtype.kind != "u" else None
        new = _update(arr, nrng) if base is not None else arr
        pipe = Pipeline.from_config({"prior": {"name": "float", "level": level}})
        blob = pipe.compress(new, base=base)
        header = container.read_header(blob)[0]
        blocks = [bytes(b) for b in container.unpack(blob).blocks]
        for _ in range(MUTANTS):
            changed = list(blocks)
            at = rng.randrange(len(changed))
            changed[at] = mutate(changed[at], rng, blocks)
            if changed[at] in blocks:
                continue  # a block moved whole: binding blocks to places is the CRC32s' job
            try:
                got = decompress(_resealed(header, changed), base=base)
            except LMGCError:
                refused += 1
                continue
            assert got.dtype == new.dtype and got.shape == new.shape
            assert got.tobytes() == new.tobytes(), f"level {level}, {new.dtype}: other values"
    assert refused > 0, "no change was refused: the blocks were not changed"
