"""Fast-level blocks of random shapes and contents (short rows, zero rows and columns, IEEE
specials, every float dtype), changed at random and decoded on every decoding path, with and
without the canonical checks: each must raise ValueError or give the very values coded, and
nothing outside the output may change (test_fast_unchecked's canaries). ``scripts/sanitize.sh``
runs this with many more cases and the kernel built under AddressSanitizer, which also sees
reads out of bounds."""

from __future__ import annotations

import random

import ml_dtypes
import numpy as np
import pytest
from lmgc_float import fast

from tests.fuzzing import fuzz_cases, mutate
from tests.plugins.lmgc_float.test_fast_unchecked import _case, _decode

MUTANTS = 25
"""Changed blocks per coded block."""
DTYPES = [np.float32, ml_dtypes.bfloat16, np.float16, np.float64, ml_dtypes.float8_e4m3fn]
SPECIALS = [np.inf, -np.inf, np.nan, -0.0, 1e-40]


def _values(rng: random.Random, nrng: np.random.Generator) -> np.ndarray:
    """A 2-D array of one of :data:`DTYPES`: rows of 1 to 1,000 values, Gaussian at a random
    scale, with zeros, zero rows and columns and specials at random."""
    rows = rng.choice([1, 2, 3, 5, 17, 40, 64])
    cols = rng.choice([1, 3, 9, 16, 25, 31, 32, 33, 100, 257, 1000])
    arr = nrng.normal(0, 10 ** rng.uniform(-6, 2), (rows, cols)).astype(np.float32)
    if rng.random() < 0.5:
        arr[nrng.random(arr.shape) < rng.random()] = 0
    if rng.random() < 0.3:
        arr[rng.randrange(rows)] = 0
    if rng.random() < 0.3:
        arr[:, rng.randrange(cols)] = 0
    if rng.random() < 0.2:
        arr.flat[rng.randrange(arr.size)] = rng.choice(SPECIALS)
    with np.errstate(all="ignore"):
        return arr.astype(rng.choice(DTYPES))


@pytest.mark.parametrize("seed", range(4))
def test_changed_blocks_are_refused_or_decode_to_the_coded_values(seed):
    rng, nrng = random.Random(seed), np.random.default_rng(seed)
    paths = sorted(fast.DECODING_PATHS)
    donors: list[bytes] = []
    refused = 0
    for _ in range(fuzz_cases(60)):
        bits, segs, layout, block = _case(_values(rng, nrng))
        assert _decode(block, bits, segs, layout, True) == bits.tobytes()
        donors = [*donors[-19:], block]
        for _ in range(MUTANTS):
            changed = mutate(block, rng, donors)
            if changed in donors[:-1]:
                continue  # another array's whole block: its place is the container's to check
            path, canonical = rng.choice(paths), rng.random() < 0.5
            with fast.decoding_path(path) as available:
                if not available:
                    continue
                got = _decode(changed, bits, segs, layout, canonical)
            refused += isinstance(got, str)  # the ValueError's text
            assert isinstance(got, str) or got == bits.tobytes(), f"{path}, {canonical=}"
    assert refused > 0, "no change was refused: the blocks were not changed"
