"""Linear n-bit quantization (LM-GC paper, Section 5 / Figure 4) and 1-bit SignSGD.

``bits = n >= 2``: every floating part ``v`` becomes integer indices

    q = round((v - min v) / (max v - min v) * (2**n - 1))        (round half to even)

sent as ``uint8`` (n <= 8) or ``uint16`` (n <= 16). ``min v`` and ``max v`` go to the stage state
as the exact bit patterns of the part's dtype (hex strings), so the JSON header round trip is
exact. The reconstruction, computed in float64 and cast back to the part's dtype, is

    v' = min v + q / (2**n - 1) * (max v - min v)

``bits = 1`` is SignSGD (Bernstein et al. 2018, with the scaled sign of Karimireddy et al. 2019):
the sign bits are sent packed eight to a byte (``np.packbits``, ``v >= 0`` -> 1, so zeros count
as positive) and the state keeps ``scale = mean |v|`` (exact bits), so that

    v' = +scale where the bit is 1, -scale where it is 0

Constant parts reconstruct exactly (every index is 0, ``v' = min v``); empty parts stay empty.
Non-finite values (NaN, +-Inf) are rejected with :class:`~lmgc_core.util.errors.LMGCError`: a linear
grid over an infinite range means nothing, and silently mapping NaN to an index would hide a
training bug. Integer parts (e.g. the indices written by ``sparsify``) pass through untouched.
"""

from __future__ import annotations

import numpy as np

from lmgc_core.coding.rebuild_limit import check_rebuild
from lmgc_core.components.interfaces import JSON, Stage
from lmgc_core.util.errors import ConfigError, LMGCError, StreamError

from ._common import (
    dtype_name,
    expect_part,
    float_parts,
    float_to_hex,
    hex_to_float,
    state_dtype,
)


def _span_fraction(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``(x - lo) / (hi - lo)`` in float64, safe when ``hi - lo`` overflows."""
    span = hi - lo
    if np.isfinite(span):
        return (x - lo) / span
    return (x * 0.5 - lo * 0.5) / (hi * 0.5 - lo * 0.5)


def _from_fraction(t: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``lo + t * (hi - lo)`` in float64; a value that rounding carried past the largest float
    (``hi`` near it: infinite before) is ``hi``, the grid's last point. Finite values are never
    changed, so every stream's reconstruction stays what it was."""
    span = hi - lo
    finite = np.isfinite(span)  # else the span itself overflows: work in halves
    out = lo + t * span if finite else 2.0 * (lo * 0.5 + t * (hi * 0.5 - lo * 0.5))
    return np.where(np.isfinite(out), out, hi)


class QuantizeStage(Stage):
    """``quantize(bits=8)``: see the module docstring for the exact maths."""

    name = "quantize"
    lossless = False

    def __init__(self, bits: int = 8) -> None:
        if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)):
            raise ConfigError(f"quantize: bits must be an integer 1..16, not {bits!r}")
        if not 1 <= int(bits) <= 16:
            raise ConfigError(f"quantize: bits must be between 1 and 16, not {bits}")
        self.bits = int(bits)

    def get_config(self) -> JSON:
        return {"bits": self.bits}

    @property
    def index_dtype(self) -> np.dtype:
        return np.dtype(np.uint8 if self.bits <= 8 else np.uint16)

    # -- forward ---------------------------------------------------------------------------

    def forward(self, parts: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], JSON]:
        out: dict[str, np.ndarray] = {}
        states: dict[str, JSON] = {}
        for name, arr in float_parts(parts, out):
            with np.errstate(invalid="ignore"):  # a signalling NaN warns as it is cast
                x = arr.astype(np.float64)
            bad = int(np.count_nonzero(~np.isfinite(x)))
            if bad:
                raise LMGCError(
                    f"quantize: part {name!r} holds {bad} non-finite value(s) (NaN/Inf); "
                    "quantization needs finite input (lossless lmgc without stages keeps NaN/Inf)"
                )
            if self.bits == 1:
                out[name], states[name] = self._sign(x, arr.dtype)
            else:
                out[name], states[name] = self._linear(arr, x)
        return out, {"parts": states}

    def _linear(self, arr: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, JSON]:
        state: JSON = {"mode": "linear", "bits": self.bits, "dtype": dtype_name(arr.dtype)}
        if arr.size == 0:
            return np.zeros(0, dtype=self.index_dtype), state | {"min": None, "max": None}
        lo_v, hi_v = arr.min(), arr.max()  # exact values of the part's own dtype
        lo, hi = float(lo_v), float(hi_v)
        levels = (1 << self.bits) - 1
        if hi > lo:
            q = np.rint(_span_fraction(x, lo, hi) * levels)
            q = np.clip(q, 0, levels).astype(self.index_dtype)
        else:
            q = np.zeros(arr.size, dtype=self.index_dtype)
        state["min"] = float_to_hex(lo_v, arr.dtype)
        state["max"] = float_to_hex(hi_v, arr.dtype)
        return q, state

    def _sign(self, x: np.ndarray, dtype: np.dtype) -> tuple[np.ndarray, JSON]:
        with np.errstate(over="ignore"):
            scale = np.abs(x).mean() if x.size else 0.0
        if not np.isfinite(scale):  # the float64 sum overflowed (values near float64's max)
            scale = (np.abs(x) / x.size).sum()
        state: JSON = {
            "mode": "sign",
            "bits": 1,
            "dtype": dtype_name(dtype),
            "count": int(x.size),
            "scale": float_to_hex(np.asarray(scale).astype(dtype), dtype),
        }
        return np.packbits(x >= 0), state

    # -- inverse ---------------------------------------------------------------------------

    def inverse(self, parts: dict[str, np.ndarray], state: JSON) -> dict[str, np.ndarray]:
        states = state.get("parts", {}) if isinstance(state, dict) else None
        if not isinstance(states, dict):
            raise StreamError(f"quantize: bad stage state {state!r}")
        out: dict[str, np.ndarray] = {}
        for name, arr in parts.items():
            st = states.get(name)
            if st is None:
                out[name] = arr
                continue
            q = expect_part(parts, name, "quantize")
            dtype = state_dtype(st["dtype"], "quantize")
            if st.get("mode") == "sign":
                out[name] = self._unsign(q, st, dtype)
            elif st.get("mode") == "linear":
                out[name] = self._unlinear(q, st, dtype)
            else:
                raise StreamError(f"quantize: unknown mode in stage state {st!r}")
        return out

    @staticmethod
    def _unlinear(q: np.ndarray, st: JSON, dtype: np.dtype) -> np.ndarray:
        if q.size == 0:
            return np.zeros(0, dtype=dtype)
        bits = st["bits"]
        if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 16:
            raise StreamError(f"quantize: bad bits {bits!r} in its stage state")
        levels = (1 << bits) - 1
        lo_v, hi_v = hex_to_float(st["min"], dtype), hex_to_float(st["max"], dtype)
        if not hi_v > lo_v:
            return np.full(q.size, lo_v, dtype=dtype)
        if int(q.max()) > levels:
            raise StreamError(f"quantize: index {int(q.max())} exceeds 2**{st['bits']} - 1")
        t = q.astype(np.float64) / levels
        return _from_fraction(t, float(lo_v), float(hi_v)).astype(dtype)

    @staticmethod
    def _unsign(packed: np.ndarray, st: JSON, dtype: np.dtype) -> np.ndarray:
        count = check_rebuild(st["count"], "quantize")
        if packed.dtype != np.uint8 or packed.size != -(-count // 8):
            raise StreamError(f"quantize: sign part has {packed.size} bytes for {count} values")
        bits = np.unpackbits(packed, count=count).astype(bool)
        scale = hex_to_float(st["scale"], dtype)
        out = np.full(count, -scale, dtype=dtype)
        out[bits] = scale
        return out
