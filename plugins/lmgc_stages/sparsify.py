"""Sparsification (LM-GC paper, Section 5 / Figure 4): keep a fraction of the entries.

``sparsify(keep=0.1, method="topk")`` keeps ``k = ceil(keep * n)`` entries of every floating part
and zeroes the rest. Each part ``p`` becomes two parts, so that each is compressed on its own
terms (positions and magnitudes have nothing in common statistically):

* ``p.values`` - the kept values, in index order, in the part's own dtype (exact);
* ``p.mask`` - the kept positions as a bitmask, ``np.packbits`` of ``n`` bits (``uint8``), or,
  with ``index_format="delta"``, ``p.delta`` - the gaps ``i_0, i_1 - i_0 - 1, ...`` of the sorted
  indices in the narrowest of ``uint8``/``uint16``/``uint32``/``uint64`` that holds them.

The bitmask is the default: ``n / 8`` bytes whatever ``k`` is, and its hex digits are iid-ish
nibbles that an adaptive order-0 model codes near the entropy ``n * H(keep)``; the gap list
spends a fixed-width integer per kept entry, most of whose digits the prior must still predict
(measured in docs/pipelines.md).

``method="topk"`` keeps the largest magnitudes (ties: the lower index; NaN ranks below every
number). ``method="random"`` keeps a uniformly random subset drawn from ``seed`` with a
self-contained SplitMix64 hash (independent of NumPy's generators, so the positions can never
change with a NumPy upgrade); the decoder regenerates the positions from ``seed``, so random-k
sends **no index part at all**. The reconstruction puts the kept values back and ``+0.0``
elsewhere. Non-finite values are kept like any other (the kept values travel losslessly).
"""

from __future__ import annotations

import math

import numpy as np

from lmgc_core.coding.rebuild_limit import check_rebuild
from lmgc_core.components.interfaces import JSON, Stage
from lmgc_core.util.errors import ConfigError, StreamError

from ._common import dtype_name, expect_part, float_parts, state_dtype

METHODS = ("topk", "random")
INDEX_FORMATS = ("bitmask", "delta")
_M64 = (1 << 64) - 1


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on a uint64 array (wrap-around arithmetic, platform independent)."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def random_indices(n: int, k: int, seed: int) -> np.ndarray:
    """The sorted positions random-k keeps: the ``k`` smallest hashes of ``(seed, i)``."""
    if k >= n:
        return np.arange(n, dtype=np.int64)
    key = np.uint64(seed & _M64)
    with np.errstate(over="ignore"):
        mixed = _splitmix64(_splitmix64(np.arange(n, dtype=np.uint64) ^ _splitmix64(key)))
    idx = np.argsort(mixed, kind="stable")[:k]
    return np.sort(idx).astype(np.int64)


def topk_indices(x: np.ndarray, k: int) -> np.ndarray:
    """The sorted positions of the ``k`` largest ``|x|`` (ties: lower index; NaN lowest)."""
    with np.errstate(invalid="ignore"):  # a signalling NaN warns as it is cast: still NaN
        mag = np.abs(x.astype(np.float64))
    mag[np.isnan(mag)] = -1.0
    idx = np.argsort(-mag, kind="stable")[:k]
    return np.sort(idx).astype(np.int64)


def _encode_delta(idx: np.ndarray) -> np.ndarray:
    gaps = np.diff(idx, prepend=-1) - 1
    top = int(gaps.max()) if gaps.size else 0
    # uint64 past 2^32: a gap of 2^32 + 9 in a tensor of over 2^32 entries came back as 9,
    # the kept values at the wrong positions under a checksum of the truncated parts
    widths = ((np.uint8, 1 << 8), (np.uint16, 1 << 16), (np.uint32, 1 << 32), (np.uint64, None))
    dtype = next(d for d, bound in widths if bound is None or top < bound)
    return gaps.astype(dtype)


def _decode_delta(gaps: np.ndarray, n: int) -> np.ndarray:
    if gaps.size and int(gaps.max()) >= n:  # no gap spans the tensor (nor wraps in int64)
        raise StreamError(f"sparsify: a gap of {int(gaps.max())} in a tensor of {n} entries")
    return np.cumsum(gaps.astype(np.int64) + 1) - 1


class SparsifyStage(Stage):
    """``sparsify(keep=0.1, method="topk"|"random", seed=0, index_format="bitmask"|"delta")``."""

    name = "sparsify"
    lossless = False

    def __init__(
        self,
        keep: float = 0.1,
        method: str = "topk",
        seed: int = 0,
        index_format: str = "bitmask",
    ) -> None:
        if isinstance(keep, bool) or not isinstance(keep, (int, float)):
            raise ConfigError(f"sparsify: keep must be a fraction in (0, 1], not {keep!r}")
        if not 0 < float(keep) <= 1:
            raise ConfigError(f"sparsify: keep must be in (0, 1], not {keep}")
        if method not in METHODS:
            raise ConfigError(f"sparsify: method must be one of {METHODS}, not {method!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ConfigError(f"sparsify: seed must be a non-negative integer, not {seed!r}")
        if index_format not in INDEX_FORMATS:
            raise ConfigError(
                f"sparsify: index_format must be one of {INDEX_FORMATS}, not {index_format!r}"
            )
        self.keep = float(keep)
        self.method = method
        self.seed = int(seed)
        self.index_format = index_format

    def get_config(self) -> JSON:
        return {
            "keep": self.keep,
            "method": self.method,
            "seed": self.seed,
            "index_format": self.index_format,
        }

    def count(self, n: int) -> int:
        """How many of ``n`` entries are kept."""
        # ceil(keep * n) as documented, at least 1 for any keep > 0 (1e-9 absorbs float error in
        # keep * n, e.g. 0.1 * 30; it made a tiny keep keep nothing)
        return min(n, max(1, math.ceil(self.keep * n - 1e-9))) if n else 0

    # -- forward ---------------------------------------------------------------------------

    def forward(self, parts: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], JSON]:
        out: dict[str, np.ndarray] = {}
        states: dict[str, JSON] = {}
        for name, arr in float_parts(parts, out):
            n = arr.size
            k = self.count(n)
            topk = self.method == "topk"
            idx = topk_indices(arr, k) if topk else random_indices(n, k, self.seed)
            st: JSON = {"n": int(n), "k": int(k), "dtype": dtype_name(arr.dtype)}
            if self.method == "random":
                st["index"] = "seed"
            elif self.index_format == "bitmask":
                mask = np.zeros(n, dtype=bool)
                mask[idx] = True
                st["index"] = "bitmask"
                st["index_part"] = f"{name}.mask"
                out[st["index_part"]] = np.packbits(mask)
            else:
                st["index"] = "delta"
                st["index_part"] = f"{name}.delta"
                out[st["index_part"]] = _encode_delta(idx)
            st["values_part"] = f"{name}.values"
            out[st["values_part"]] = arr[idx]
            states[name] = st
        return out, {"method": self.method, "seed": self.seed, "parts": states}

    # -- inverse ---------------------------------------------------------------------------

    def inverse(self, parts: dict[str, np.ndarray], state: JSON) -> dict[str, np.ndarray]:
        states = state.get("parts") if isinstance(state, dict) else None
        if not isinstance(states, dict):
            raise StreamError(f"sparsify: bad stage state {state!r}")
        owner: dict[str, str] = {}
        for name, st in states.items():
            if not isinstance(st, dict):
                raise StreamError(f"sparsify: bad state {st!r} for part {name!r}")
            for key in ("index_part", "values_part"):
                if st.get(key):
                    owner[st[key]] = name
        out: dict[str, np.ndarray] = {}
        for pname, arr in parts.items():
            name = owner.get(pname)
            if name is None:
                out[pname] = arr
            elif name not in out:
                out[name] = self._rebuild(parts, states[name], int(state.get("seed", 0)))
        missing = set(states) - set(out)
        if missing:
            raise StreamError(f"sparsify: parts for {sorted(missing)} are missing from the stream")
        return out

    @staticmethod
    def _rebuild(parts: dict[str, np.ndarray], st: JSON, seed: int) -> np.ndarray:
        n = check_rebuild(st["n"], "sparsify")  # before random_indices' O(n) work
        k = st["k"]
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= n:
            raise StreamError(f"sparsify: bad count k={k!r} of n={n} in its stage state")
        dtype = state_dtype(st["dtype"], "sparsify")
        values = expect_part(parts, st["values_part"], "sparsify")
        if st["index"] == "seed":
            idx = random_indices(n, k, seed)
        elif st["index"] == "bitmask":
            packed = expect_part(parts, st["index_part"], "sparsify")
            if packed.size != -(-n // 8):
                raise StreamError(f"sparsify: mask has {packed.size} bytes for {n} entries")
            idx = np.flatnonzero(np.unpackbits(packed.astype(np.uint8), count=n))
        elif st["index"] == "delta":
            idx = _decode_delta(expect_part(parts, st["index_part"], "sparsify"), n)
        else:
            raise StreamError(f"sparsify: unknown index format {st['index']!r}")
        if idx.size != k or values.size != k or (k and (idx[0] < 0 or idx[-1] >= n)):
            raise StreamError(
                f"sparsify: stream holds {idx.size} positions and {values.size} values, "
                f"header says {k} of {n}"
            )
        out = np.zeros(n, dtype=dtype)
        out[idx] = values.astype(dtype, copy=False)
        return out
