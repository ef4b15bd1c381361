"""``check_serializer`` and ``check_coder``: the symbol stream and its entropy coding."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from lmgc_core.coding.probability import distributions
from lmgc_core.components.interfaces import EntropyCoder, Serializer
from lmgc_core.testing._common import (
    Subject,
    check_config,
    roundtrip_everywhere,
    same_bits,
    subject,
)
from lmgc_core.testing.samples import sample_arrays
from lmgc_core.util.errors import LMGCError


def check_serializer(
    serializer: Any,
    *,
    config: Mapping[str, Any] | None = None,
    fresh_process: bool = True,
    cli: bool = True,
    codec: bool = True,
) -> list[str]:
    """Check a serializer (name, spec or instance): its periodic pattern, exact inversion for
    every dtype and byte order, and round trips under the ``adaptive`` and ``uniform`` priors."""
    sub = subject("serializer", serializer)
    ser = sub.component
    if not isinstance(ser, Serializer):
        sub.fail("interface", f"{type(ser).__name__} is not a lmgc_core Serializer")
    check_config(sub)
    _check_pattern(sub, ser)
    arrays = sample_arrays()
    for name, arr in arrays.items():
        _check_symbols(sub, ser, name, arr)
    sub.ok("symbols follow the pattern and invert exactly")
    for prior in ("adaptive", "uniform"):
        cfg = {"prior": prior, "window": 40, "batch": 4, **(config or {}), "serializer": sub.spec}
        fresh = fresh_process and prior == "adaptive"
        roundtrip_everywhere(sub, cfg, arrays, cli=cli, codec=codec, fresh_process=fresh)
    return sub.passed


def _check_pattern(sub: Subject, ser: Serializer) -> None:
    alphabet, pattern, free = ser.alphabet, ser.pattern, ser.free_symbols
    if not isinstance(alphabet, tuple) or not all(isinstance(a, bytes) and a for a in alphabet):
        sub.fail("alphabet", "must be a tuple of non-empty bytes")
    if len(set(alphabet)) != len(alphabet):
        sub.fail("alphabet", "has duplicate symbols")
    if not isinstance(pattern, tuple) or not pattern:
        sub.fail("pattern", "must be a non-empty tuple")
    if not all(isinstance(p, int) and -1 <= p < len(alphabet) for p in pattern):
        sub.fail("pattern", f"entries must be -1 or alphabet indices, not {pattern}")
    if -1 not in pattern:
        sub.fail("pattern", "has no data position (-1)")
    if not free or len(set(free)) != len(free) or not all(0 <= f < len(alphabet) for f in free):
        sub.fail("free_symbols", f"must be distinct alphabet indices, not {free}")
    for n in (0, 1, 7, 64):
        count = ser.n_symbols(n)
        if count % ser.period:
            sub.fail("n_symbols", f"n_symbols({n}) = {count} is not a multiple of the period")
    sub.ok("alphabet, pattern and free symbols are consistent")


def _check_symbols(sub: Subject, ser: Serializer, name: str, arr: np.ndarray) -> None:
    flat = arr.reshape(-1)
    symbols = ser.to_symbols(flat)
    if not isinstance(symbols, np.ndarray) or symbols.dtype != np.uint16 or symbols.ndim != 1:
        got = getattr(symbols, "dtype", type(symbols).__name__)
        sub.fail("to_symbols", f"must return a 1-D uint16 array, not {got}")
    if symbols.size != ser.n_symbols(flat.nbytes):
        sub.fail(
            "n_symbols",
            f"{name}: to_symbols gives {symbols.size}, n_symbols says {ser.n_symbols(flat.nbytes)}",
        )
    pattern = np.asarray(ser.pattern)[np.arange(symbols.size) % ser.period]
    forced = pattern >= 0
    if not np.array_equal(symbols[forced], pattern[forced]):
        sub.fail("to_symbols", f"{name}: forced positions do not hold the pattern's symbols")
    if not np.isin(symbols[~forced], np.asarray(ser.free_symbols)).all():
        sub.fail("to_symbols", f"{name}: a data position holds a symbol outside free_symbols")
    back = ser.from_symbols(symbols.copy(), flat.dtype, flat.size)
    if not same_bits(np.asarray(back), flat):
        sub.fail("from_symbols", f"{name} ({flat.dtype.str}) does not come back bit-exact")


def check_coder(
    coder: Any,
    *,
    config: Mapping[str, Any] | None = None,
    fresh_process: bool = True,
    cli: bool = True,
    codec: bool = True,
) -> list[str]:
    """Check an entropy coder (name, spec or instance): exact decoding of shared and per-row
    distributions, deterministic bytes, clean failures on garbage, and pipeline round trips."""
    sub = subject("coder", coder)
    if not isinstance(sub.component, EntropyCoder):
        sub.fail("interface", f"{type(sub.component).__name__} is not a lmgc_core EntropyCoder")
    check_config(sub)
    rng = np.random.default_rng(7)
    for size in (2, 16, 256):
        _check_symbol_coding(sub, rng, size)
    sub.ok("exact symbol coding, deterministic bytes")
    _check_garbage(sub, rng)
    cfg = {"prior": "adaptive", "window": 40, "batch": 4, **(config or {}), "coder": sub.spec}
    arrays = sample_arrays()
    roundtrip_everywhere(sub, cfg, arrays, cli=cli, codec=codec, fresh_process=fresh_process)
    return sub.passed


def _steps(rng: np.random.Generator, size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Calls as the engine makes them: shared ``(1, A)`` and per-row ``(n, A)`` distributions,
    flat, peaked and floor-dominated ones, and empty calls (a step with no active row)."""
    free = np.arange(size)
    out = [
        (np.zeros(0, dtype=np.int64), np.zeros((0, size))),
        (np.zeros(0, dtype=np.int64), distributions(np.zeros((1, size)), free)),
    ]
    for i in range(12):
        n = int(rng.integers(1, 9))
        scale = (0.1, 5.0, 60.0)[i % 3]
        rows = 1 if i % 2 else n
        probs = distributions(rng.normal(0, scale, (rows, size)), free)
        out.append((rng.integers(0, size, n), probs))
    return out


def _check_symbol_coding(sub: Subject, rng: np.random.Generator, size: int) -> None:
    coder = sub.component
    steps = _steps(rng, size)
    blobs = []
    for _ in range(2):
        enc = coder.encoder()
        for symbols, probs in steps:
            enc.encode(symbols, probs)
        blobs.append(bytes(enc.finish()))
    if blobs[0] != blobs[1]:
        sub.fail("determinism", "the same symbols and distributions give different bytes")
    dec = coder.decoder(blobs[0])
    for i, (symbols, probs) in enumerate(steps):
        got = np.asarray(dec.decode(probs, len(symbols)))
        if got.shape != symbols.shape or not np.array_equal(got.astype(np.int64), symbols):
            sub.fail("decode", f"alphabet of {size}: call {i} decodes {got} instead of {symbols}")


def _check_garbage(sub: Subject, rng: np.random.Generator) -> None:
    """A corrupted block must give an LMGCError or some symbols, never another exception."""
    probs = distributions(rng.normal(0, 3, (1, 16)), np.arange(16))
    for size in (0, 3, 8, 64):
        garbage = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        try:
            got = np.asarray(sub.component.decoder(garbage).decode(probs, 20))
        except LMGCError:
            continue
        except Exception as exc:
            sub.fail(
                "garbage",
                f"{size} garbage bytes raise {type(exc).__name__}: {exc}; "
                "raise a StreamError instead",
            )
        if got.shape != (20,) or (got.size and (got.min() < 0 or got.max() >= 16)):
            sub.fail("garbage", "decoding garbage returns symbols outside the alphabet")
    sub.ok("garbage gives StreamError or in-range symbols")
