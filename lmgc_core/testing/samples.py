"""The arrays the kit codes: gradient-like values, IEEE specials, both byte orders, odd shapes.

Generated from a fixed seed with integer arithmetic on the bit patterns, so every run and every
machine checks the same bytes."""

from __future__ import annotations

import numpy as np


def gradients(n: int, seed: int = 0) -> np.ndarray:
    """``n`` float32 values shaped like gradients: Laplace-ish magnitudes, a quarter zeros."""
    rng = np.random.default_rng(seed)
    values = (rng.laplace(0.0, 1e-3, n) * (rng.random(n) > 0.25)).astype(np.float32)
    return values


def specials(dtype: str = "<f4") -> np.ndarray:
    """NaNs (quiet, signalling, negative, with payloads), infinities, signed zeros, subnormals,
    extremes, in ``dtype`` (any float dtype, either byte order)."""
    dt = np.dtype(dtype)
    info = np.finfo(dt.newbyteorder("="))
    bits = 8 * dt.itemsize
    mant = info.nmant
    uint = np.dtype(f"u{dt.itemsize}")
    exp_all = ((1 << (bits - 1 - mant)) - 1) << mant
    sign = 1 << (bits - 1)
    patterns = [
        exp_all | (1 << (mant - 1)),  # quiet NaN
        exp_all | 1,  # signalling NaN, payload 1
        sign | exp_all | (1 << (mant - 1)) | 5,  # negative quiet NaN with payload
        exp_all,  # +inf
        sign | exp_all,  # -inf
        0,  # +0.0
        sign,  # -0.0
        1,  # smallest subnormal
        (1 << mant) - 1,  # largest subnormal
        sign | 1,  # negative subnormal
    ]
    raw = np.array(patterns, dtype=np.uint64).astype(uint).view(dt.newbyteorder("="))
    extremes = np.array([info.max, -info.max, info.tiny, 1.0, -1.0, 1 / 3], dtype=raw.dtype)
    return in_byte_order(np.concatenate([raw, extremes]), dt)


def in_byte_order(arr: np.ndarray, dtype: np.dtype | str) -> np.ndarray:
    """``arr`` (native order) as ``dtype`` of the other byte order by swapping bytes, never by a
    float conversion (which may quieten a signalling NaN)."""
    dt = np.dtype(dtype)
    arr = np.ascontiguousarray(arr, dtype=dt.newbyteorder("="))
    return arr if dt.isnative else arr.byteswap().view(dt)


def sample_arrays(small: bool = False) -> dict[str, np.ndarray]:
    """Named arrays for round trips; ``small`` keeps them tiny (LM priors on a CPU)."""
    if small:
        mixed = np.concatenate([gradients(3), specials("<f4")[[0, 2, 6, 7]]])
        return {
            "gradients": gradients(6).reshape(2, 3),
            "specials_big_endian": in_byte_order(mixed, ">f4"),
            "scalar": np.array(-0.0, dtype=np.float64),
        }
    n = 150
    grads = gradients(n)
    arrays = {
        "gradients": grads.reshape(2, n // 2),
        "specials_f4": specials("<f4"),
        "big_endian_f4": in_byte_order(np.concatenate([grads[:6], specials("<f4")[:6]]), ">f4"),
        "float16": gradients(12, seed=1).astype(np.float16),
        "float64_specials": specials("<f8"),
        "int16": (np.arange(-6, 6, dtype=np.int16) * 1000),
        "empty": np.zeros(0, dtype=np.float32),
        "scalar": np.array(-0.0, dtype=np.float64),
    }
    return arrays
