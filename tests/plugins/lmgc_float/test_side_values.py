"""Fast blocks version 9: a segment's row / column means packed as Rice codes where that is
shorter than varints (docs/format.md, "Side values"). The lists are read back here by a
separate Python reader of the documented layout, so the kernel's bytes are checked against the
description, not only against the kernel's own decoder."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from lmgc_float import fast
from lmgc_float.formats import float_format

from tests.paths import TESTS_DIR
from tests.plugins.lmgc_float.test_fast_canonical import _undetected, _varint

DATA = TESTS_DIR / "data"
F_PACK_R, F_PACK_C = 32, 64
RICE_ESC, RICE_RAW = 15, 27


def _unzz(z: int) -> int:
    return -(z >> 1) - 1 if z & 1 else z >> 1


def _varints(side: bytes, at: int, n: int) -> tuple[list[int], int]:
    out, prev = [], 0
    for _ in range(n):
        z, at = _varint(side, at)
        prev += _unzz(z)
        out.append(prev)
    return out, at


def _packed(side: bytes, at: int, n: int) -> tuple[list[int], int, int, int]:
    """(values, next byte, k, escapes) of a packed list, as docs/format.md describes it."""
    k = side[at]
    z, at = _varint(side, at + 1)
    out, escapes = [_unzz(z)], 0
    bits = int.from_bytes(side[at:], "little")
    pos = 0
    for _ in range(n - 1):
        q = 0
        while not bits >> pos & 1:
            q, pos = q + 1, pos + 1
            assert q <= RICE_ESC, "a unary part longer than an escape's"
        pos += 1
        assert q <= RICE_ESC
        if q == RICE_ESC:
            z, pos, escapes = bits >> pos & (1 << RICE_RAW) - 1, pos + RICE_RAW, escapes + 1
            assert z >> k >= RICE_ESC
        else:
            z, pos = q << k | bits >> pos & (1 << k) - 1, pos + k
        out.append(out[-1] + _unzz(z))
    used = (pos + 7) // 8
    assert bits & (1 << 8 * used) - 1 == bits & (1 << pos) - 1, "padding bits are zero"
    return out, at + used, k, escapes


def _side(block: bytes, rows: int, cols: int) -> dict:
    """The one segment's flags, lists and the bytes after them (the bitmaps)."""
    assert block[0] & 3 == 3, "a float block (kind 3), not a stored one"
    at = 1
    for _ in range(2):
        _, at = _varint(block, at)
    length, at = _varint(block, at)
    side = block[at : at + length]
    flags, at = side[0], 1
    mode = flags & 3
    assert mode in (1, 2), "the inputs below are given row (and column) scales"
    out = {"flags": flags, "length": length, "escapes": 0, "k": [], "C": []}
    lists = [("R", rows, flags & F_PACK_R), ("C", cols, flags & F_PACK_C)][:mode]
    for name, n, packed in lists:
        if packed:
            out[name], at, k, escapes = _packed(side, at, n)
            out["escapes"] += escapes
            out["k"].append(k)
        else:
            out[name], at = _varints(side, at, n)
    out["rest"] = side[at:]  # bitmaps
    return out


def _varint_bytes(values: list[int]) -> int:
    prev, total = 0, 0
    for v in values:
        z = 2 * (v - prev) if v >= prev else 2 * (prev - v) - 1
        total += max(1, (z.bit_length() + 6) // 7)
        prev = v
    return total


def _gradients(rows: int, cols: int, dtype) -> np.ndarray:
    """Real gradients with per-row and per-column scales (exponent means a few quarters apart)."""
    g = np.load(DATA / "mlp_grads_8k.npy").astype(np.float64)[: rows * cols].reshape(rows, cols)
    r, c = np.arange(rows)[:, None], np.arange(cols)[None, :]
    return (g * 2.0 ** ((r * 5 % 7) / 3) * 2.0 ** ((c * 3 % 5) / 2)).astype(dtype)


def _two_rows(dtype) -> np.ndarray:
    """Two rows of 1,024 values whose exponents follow a smooth column profile of +-6
    exponents (their mantissas from real gradients): the column means pay for themselves."""
    g = np.load(DATA / "mlp_grads_8k.npy").astype(np.float64)[:2048].reshape(2, 1024)
    profile = 2.0 ** np.round(6 * np.sin(np.arange(1024) / 40))
    return ((1 + np.abs(g) / np.abs(g).max()) * np.sign(g + 1e-30) * profile).astype(dtype)


def _code(arr: np.ndarray) -> tuple[bytes, np.ndarray, np.ndarray, tuple]:
    k = fast.kernel()
    bits = arr.view(f"u{arr.itemsize}")
    segs = np.array([0, *arr.shape], dtype=np.int64)
    layout = fast._layout(bits, float_format(arr.dtype))
    block = k.encode(bits, segs, *layout)
    out = np.empty_like(bits)
    k.decode(block, out, segs, *layout)
    assert out.tobytes() == bits.tobytes()
    return block, bits, segs, layout


@pytest.mark.parametrize("dtype", [np.float32, ml_dtypes.bfloat16, np.float16, np.float64])
def test_long_lists_are_packed_and_shorter(dtype):
    arr = _gradients(64, 128, dtype)
    block, *_ = _code(arr)
    side = _side(block, *arr.shape)
    assert side["flags"] & F_PACK_R and side["flags"] & F_PACK_C
    varints = _varint_bytes(side["R"]) + _varint_bytes(side["C"])
    packed = side["length"] - 1 - len(side["rest"])
    assert packed < 0.7 * varints, (packed, varints)


def test_a_short_list_stays_varints():
    """Two rows: their packed list would cost its k byte more than it saves; the 1,024
    columns' list is packed."""
    arr = _two_rows(np.float32)
    block, *_ = _code(arr)
    side = _side(block, *arr.shape)
    assert not side["flags"] & F_PACK_R and side["flags"] & F_PACK_C
    assert len(side["R"]) == 2 and len(side["C"]) == 1024


def test_a_jump_in_the_row_means_is_escaped():
    """One row 2^80 times larger than the rest: its difference (and the one back) is far past
    what the list's k codes in 15 steps, so it is escaped with its 27 bits."""
    arr = _gradients(64, 128, np.float32)
    row = 50
    assert all(arr[row - 1 : row + 2].any(axis=1))  # no zero row around it
    arr[row] *= np.float32(2.0**80)
    block, bits, segs, layout = _code(arr)
    side = _side(block, *arr.shape)
    assert side["flags"] & F_PACK_R and side["escapes"] == 2
    assert side["R"][row] - side["R"][row - 1] >= 4 * 70  # quarter exponents
    assert _undetected(block, bits, segs, layout) == []


def test_every_bit_flip_of_packed_lists_fails_to_decode():
    arr = _gradients(16, 48, ml_dtypes.bfloat16)
    block, bits, segs, layout = _code(arr)
    side = _side(block, *arr.shape)
    assert side["flags"] & F_PACK_R
    assert _undetected(block, bits, segs, layout) == []


def test_every_bit_flip_of_a_varint_list_beside_a_packed_one_fails_to_decode():
    arr = _two_rows(np.float16)
    block, bits, segs, layout = _code(arr)
    side = _side(block, *arr.shape)
    assert not side["flags"] & F_PACK_R and side["flags"] & F_PACK_C
    assert _undetected(block, bits, segs, layout) == []
