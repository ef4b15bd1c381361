"""A byte-oriented range coder (LZMA's carry-propagating design) and adaptive models, in numba.

Everything the coder sees is integer arithmetic: binary probabilities are 16-bit integers updated
by shifts, multi-symbol models are integer counts turned into a frequency table that sums to
exactly ``2**TOTAL_BITS``. Streams are therefore bit-identical on every CPU (no float, no SIMD
transcendental, no thread-count dependence).

Between kernel calls the state lives in small int64 arrays (encoder ``es``: ``[low, range,
cache, cache_size, out_pos]``, decoder ``ds``: ``[code, range, in_pos]``, raw bits ``[acc, bits,
pos]``); inside a kernel it is held in local variables that the inlined helpers take and return.

numba caches each kernel's machine code keyed on the kernel's own file: after editing only this
module, delete ``plugins/lmgc_float/__pycache__/*.nb*`` (a release changes every file anyway).

A decoder fed damaged bytes never reads or writes out of bounds: past the end it reads zeros, the
code register is kept to 32 bits, and every decoded index is clamped to its alphabet; the caller's
checksum then reports the damage.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from . import tables
from .tables import (
    COUNT_LIMIT,
    COUNT_STEP,
    MAX_REBUILD,
    PROB_BITS,
    PROB_ONE,
    TOP,
    TOTAL,
    TOTAL_BITS,
)


# -- encoder ------------------------------------------------------------------------------------
@njit(cache=True, nogil=True, inline="always")
def _shift_low(es, out):
    low = es[0]
    if low < 0xFF000000 or low >= 0x100000000:
        carry = low >> 32
        temp = es[2]
        while True:
            pos = es[4]
            if pos < out.shape[0]:
                out[pos] = (temp + carry) & 0xFF
            es[4] = pos + 1
            temp = 0xFF
            es[3] -= 1
            if es[3] == 0:
                break
        es[2] = (low >> 24) & 0xFF
    es[3] += 1
    es[0] = (low & 0x00FFFFFF) << 8


@njit(cache=True, nogil=True)
def encoder_finish(es, out):
    for _ in range(5):
        _shift_low(es, out)
    return es[4]


# -- decoder ------------------------------------------------------------------------------------
@njit(cache=True, nogil=True, inline="always")
def _next_byte(ds, inp):
    pos = ds[2]
    ds[2] = pos + 1
    if pos < inp.shape[0]:
        return np.int64(inp[pos])
    return np.int64(0)


def decoder_state(inp: np.ndarray) -> np.ndarray:
    ds = tables.decoder_state()
    decoder_init(ds, inp)
    return ds


@njit(cache=True, nogil=True)
def decoder_init(ds, inp):
    for _ in range(4):
        ds[0] = ((ds[0] << 8) | _next_byte(ds, inp)) & 0xFFFFFFFF


# -- coding steps, state in local variables ---------------------------------------------------
# The kernels keep ``(low, range, cache, cache_size, pos)`` / ``(code, range, pos)`` in locals and
# pass them through these helpers, which return the new state: LLVM then keeps the state in
# registers instead of reloading it from the state arrays after every output byte.
@njit(cache=True, nogil=True, inline="always")
def enc_norm(low, rng, cache, csize, pos, out):
    while rng < TOP:
        rng <<= 8
        if low < 0xFF000000 or low >= 0x100000000:
            carry = low >> 32
            temp = cache
            while True:
                if pos < out.shape[0]:
                    out[pos] = (temp + carry) & 0xFF
                pos += 1
                temp = 0xFF
                csize -= 1
                if csize == 0:
                    break
            cache = (low >> 24) & 0xFF
        csize += 1
        low = (low & 0x00FFFFFF) << 8
    return low, rng, cache, csize, pos


@njit(cache=True, nogil=True, inline="always")
def enc_bit(low, rng, probs, ctx, bit):
    """One binary decision: returns the new ``(low, range)`` (normalize afterwards)."""
    p = (probs[ctx, 0] + probs[ctx, 1]) >> 1
    bound = (rng >> PROB_BITS) * p
    if bit == 0:
        rng = bound
        probs[ctx, 0] += (PROB_ONE - probs[ctx, 0]) >> 4
        probs[ctx, 1] += (PROB_ONE - probs[ctx, 1]) >> 6
    else:
        low += bound
        rng -= bound
        probs[ctx, 0] -= probs[ctx, 0] >> 4
        probs[ctx, 1] -= probs[ctx, 1] >> 6
    return low, rng


@njit(cache=True, nogil=True, inline="always")
def enc_sym(low, rng, model, ctx, sym):
    counts, cum, ticks = model
    r = rng >> TOTAL_BITS
    lo = cum[ctx, sym]
    low += r * lo
    rng = r * (cum[ctx, sym + 1] - lo)
    _update(counts, cum, ticks, ctx, sym)
    return low, rng


@njit(cache=True, nogil=True, inline="always")
def dec_norm(code, rng, pos, inp):
    while rng < TOP:
        rng <<= 8
        byte = np.int64(inp[pos]) if pos < inp.shape[0] else np.int64(0)
        pos += 1
        code = ((code << 8) | byte) & 0xFFFFFFFF
    return code, rng, pos


@njit(cache=True, nogil=True, inline="always")
def dec_bit(code, rng, probs, ctx):
    """Returns ``(bit, code, range)`` (normalize afterwards)."""
    p = (probs[ctx, 0] + probs[ctx, 1]) >> 1
    bound = (rng >> PROB_BITS) * p
    if code < bound:
        probs[ctx, 0] += (PROB_ONE - probs[ctx, 0]) >> 4
        probs[ctx, 1] += (PROB_ONE - probs[ctx, 1]) >> 6
        return 0, code, bound
    probs[ctx, 0] -= probs[ctx, 0] >> 4
    probs[ctx, 1] -= probs[ctx, 1] >> 6
    return 1, code - bound, rng - bound


@njit(cache=True, nogil=True, inline="always")
def dec_sym(code, rng, model, ctx):
    """Returns ``(symbol, code, range)`` (normalize afterwards)."""
    counts, cum, ticks = model
    r = rng >> TOTAL_BITS
    # The symbol is the last one with ``cum * r <= code`` (that is, ``cum <= floor(code / r)``,
    # exactly, in integers), found by multiplications instead of one long-latency division.
    # Frequencies are >= 1, so ``cum`` rises strictly and the symbol is the number of
    # ``k in 1..n-1`` with ``cum[k] * r <= code``: for small alphabets that count has no
    # data-dependent branch to mispredict. It stays in the alphabet even for damaged input.
    n = counts.shape[1]
    if n <= 32:
        sym = 0
        for k in range(1, n):
            sym += cum[ctx, k] * r <= code
    else:
        lo, hi = 0, n - 1
        while lo < hi:
            mid = (lo + hi + 1) >> 1
            if cum[ctx, mid] * r <= code:
                lo = mid
            else:
                hi = mid - 1
        sym = lo
    low = cum[ctx, sym]
    code -= r * low
    rng = r * (cum[ctx, sym + 1] - low)
    _update(counts, cum, ticks, ctx, sym)
    return sym, code, rng


# -- models (fresh tables: tables.new_bits / tables.new_model) ------------------------------------
@njit(cache=True, nogil=True)
def _rebuild(counts, cum, ctx):
    """Frequencies from counts: every symbol >= 1, total exactly ``TOTAL``, the remainder of
    the integer division going to the most frequent symbol (first on ties)."""
    n = counts.shape[1]
    total = 0
    for i in range(n):
        total += counts[ctx, i]
    avail = TOTAL - n
    acc = 0
    best = 0
    best_count = -1
    for i in range(n):
        c = counts[ctx, i]
        cum[ctx, i] = acc
        acc += 1 + c * avail // total
        if c > best_count:
            best_count = c
            best = i
    rest = TOTAL - acc
    for i in range(best + 1, n):
        cum[ctx, i] += rest
    cum[ctx, n] = TOTAL
    if total > COUNT_LIMIT:
        for i in range(n):
            counts[ctx, i] = (counts[ctx, i] + 1) >> 1


@njit(cache=True, nogil=True, inline="always")
def _update(counts, cum, ticks, ctx, sym):
    counts[ctx, sym] += COUNT_STEP
    ticks[ctx, 0] += 1
    if ticks[ctx, 0] >= ticks[ctx, 1]:
        ticks[ctx, 0] = 0
        if ticks[ctx, 1] < MAX_REBUILD:
            ticks[ctx, 1] <<= 1
        _rebuild(counts, cum, ctx)


# -- raw bits with local state (hot kernels) --------------------------------------------------
@njit(cache=True, nogil=True, inline="always")
def put(acc, nb, pos, out, value, nbits):
    """Append the low ``nbits`` (<= 56) of ``value``; returns the new ``(acc, nb, pos)``."""
    if nbits == 0:
        return acc, nb, pos
    acc |= (value & ((np.int64(1) << nbits) - 1)) << nb
    nb += nbits
    while nb >= 8:
        if pos < out.shape[0]:
            out[pos] = acc & 0xFF
        pos += 1
        acc = (acc >> 8) & 0x00FFFFFFFFFFFFFF
        nb -= 8
    return acc, nb, pos


@njit(cache=True, nogil=True, inline="always")
def take(acc, nb, pos, inp, nbits):
    """Read ``nbits`` (<= 56); returns ``(value, acc, nb, pos)``."""
    if nbits == 0:
        return np.int64(0), acc, nb, pos
    while nb < nbits:
        byte = np.int64(inp[pos]) if pos < inp.shape[0] else np.int64(0)
        acc |= byte << nb
        nb += 8
        pos += 1
    value = acc & ((np.int64(1) << nbits) - 1)
    acc = (acc >> nbits) & ((np.int64(1) << (63 - nbits)) - 1)
    return value, acc, nb - nbits, pos


# -- raw bits -----------------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def flush_bits(bw, out):
    while bw[1] > 0:
        pos = bw[2]
        if pos < out.shape[0]:
            out[pos] = bw[0] & 0xFF
        bw[2] = pos + 1
        bw[0] >>= 8
        bw[1] -= 8
    bw[1] = 0
    return bw[2]
