"""The fast kernel's rows with zeros: a zero (+0 / -0) has no B or raw entry, so each value's
entry is the count of coded values before it, which the decoder expands branch-free (AVX-512VL,
AVX2 or scalar, chosen at run time: expand_row in _fast_kernels.c). Every path must rebuild the
same bits, with and without the canonical checks, at every density of zeros, in every float
format, in 1-D and 2-D segments of odd sizes and in rows longer than one expansion run."""

from __future__ import annotations

import hashlib
import json

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lmgc_float import fast
from lmgc_float.formats import float_format

from lmgc_core import decompress, read_header
from tests.paths import TESTS_DIR

DATA = TESTS_DIR / "data"
FIXTURES = TESTS_DIR / "fixtures"
DTYPES = [
    np.float32,
    ml_dtypes.bfloat16,
    np.float16,
    np.float64,
    ml_dtypes.float8_e4m3fn,
    ml_dtypes.float8_e5m2,
]
DENSITIES = [0.0, 0.01, 0.14, 0.5, 0.9, 0.999, 1.0]
SHAPES = [(1, 1), (1, 7), (1, 1001), (3, 5), (37, 53), (8, 4099), (300, 9)]
"""1-D (one row) and 2-D segments: odd sizes, one row longer than an expansion run (2048)"""


def _with_zeros(shape, dtype, density: float, seed: int, lines: bool) -> np.ndarray:
    """Real gradients with row / column scales, scattered +0 / -0 at `density`, and (with
    `lines`) an all-zero row and all-zero columns (the first, the last, one at random and a run
    of nine), so the encoder's zero-row / zero-column side information and per-column
    predictions come into play."""
    rng = np.random.default_rng(seed)
    g = np.load(DATA / "mlp_grads_8k.npy").astype(np.float64).reshape(-1)
    g = g[g != 0]
    rows, cols = shape
    vals = rng.choice(g, size=rows * cols).reshape(shape) / np.abs(g).max()
    vals *= 2.0 ** (np.arange(rows) % 5 - 2)[:, None] * 2.0 ** (np.arange(cols) * 7 % 5 - 2)
    zero = rng.random(shape) < density
    vals[zero] = np.where(rng.random(int(zero.sum())) < 0.3, -0.0, 0.0)
    if lines and rows > 2 and cols > 2:
        vals[rows // 2] = 0.0
        dead = [0, cols - 1, int(rng.integers(cols)), *range(cols // 2, cols // 2 + 9)]
        vals[:, [c for c in dead if c < cols and (c or seed % 3)]] = -0.0 if seed % 2 else 0.0
    with np.errstate(over="ignore"):
        return vals.astype(dtype)


def _round_trip(arrays: list[np.ndarray], canonical: bool) -> None:
    """Code the arrays as the segments of one block; every path decodes it bit for bit."""
    k = fast.kernel()
    bits = np.concatenate([a.reshape(-1).view(f"u{a.itemsize}") for a in arrays])
    segs, off = [], 0
    for a in arrays:
        rows, cols = (1, a.size) if a.ndim == 1 else a.shape
        segs.append((off, rows, cols))
        off += a.size
    segs = np.array(segs, dtype=np.int64).reshape(-1)
    layout = fast._layout(bits, float_format(arrays[0].dtype))
    block = k.encode(bits, segs, *layout)
    for name in fast.DECODING_PATHS:
        with fast.decoding_path(name) as here:
            if not here:
                continue
            out = np.full_like(bits, 0x5A)  # every value must be written
            k.decode(block, out, segs, *layout, canonical=canonical)
            assert out.tobytes() == bits.tobytes(), name


@pytest.mark.parametrize("canonical", [False, True], ids=["unchecked", "canonical"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_scattered_zeros_round_trip_on_every_decoding_path(dtype, canonical):
    for i, (shape, density) in enumerate((s, d) for s in SHAPES for d in DENSITIES):
        arr = _with_zeros(shape, dtype, density, seed=i, lines=i % 3 == 0)
        _round_trip([arr.reshape(-1) if shape[0] == 1 else arr], canonical)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_zero_rows_columns_and_segments_in_one_block(dtype):
    """A block of several segments: the expansion carries its position in B and raw from one
    segment to the next, and ends exactly at the block's last coded value."""
    parts = [
        _with_zeros((16, 33), dtype, 0.3, seed=1, lines=True).reshape(-1),
        _with_zeros((16, 33), dtype, 0.3, seed=2, lines=True),
        np.zeros((4, 9), dtype),
        _with_zeros((1, 77), dtype, 0.5, seed=3, lines=False).reshape(-1),
        _with_zeros((5, 300), dtype, 0.05, seed=4, lines=True),
    ]
    parts[2][1, 1] = -0.0
    for canonical in (False, True):
        _round_trip(parts, canonical)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    dtype=st.sampled_from(DTYPES),
    rows=st.integers(1, 24),
    cols=st.integers(1, 90),
    density=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
    lines=st.booleans(),
    canonical=st.booleans(),
)
def test_random_zero_patterns(dtype, rows, cols, density, seed, lines, canonical):
    arr = _with_zeros((rows, cols), dtype, density, seed, lines)
    _round_trip([arr.reshape(-1) if rows == 1 else arr], canonical)


@pytest.mark.parametrize("name", ["float-level1.lmgc", "float-level1-bf16.lmgc"])
def test_version_2_streams_decode_on_every_decoding_path(name):
    """Version 2 blocks (B: a symbol of its own per coded value, expanded beside raw) decode to
    what their fixture index records on every expansion path."""
    blob = (FIXTURES / "stream-v2-b" / name).read_bytes()
    assert read_header(blob)["prior"]["fast_version"] == 2
    want = json.loads((FIXTURES / "stream-v2-b" / "index.json").read_text())["files"][name]
    for path in fast.DECODING_PATHS:
        with fast.decoding_path(path) as here:
            if not here:
                continue
            out = np.ascontiguousarray(decompress(blob))
            assert out.size and (out == 0).any()  # the rows with zeros are what this is about
            got = hashlib.sha256(out.tobytes()).hexdigest()
            assert got == want["expected"]["sha256"], path
