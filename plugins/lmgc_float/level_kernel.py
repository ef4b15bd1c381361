"""The integer model for quantized values: levels around a centre, like the float fields.

A quantizer's indices are ``z + round(g / step)``: the index ``z`` of a zero gradient is by far
the most common value, and the distance from it behaves like the float's value. So each index is
coded as ``d = v - z`` (modulo the item width) through the float model's fields: a zero flag
(``d == 0``) in row/column context, a sign in row/column sign context, the bit length of ``|d|``
against a rank-1 prediction (row mean + column mean - tensor mean), the next bits below the
leading one in the context of that length, and any further bits raw. ``z`` (the block's most
common value) is stored in the block.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .float_kernel import (
    ESCAPE,
    RESID,
    _exp_context,
    _sign_context,
    _unzigzag,
    _zero_context,
    _zigzag,
)
from .rangecoder import dec_bit, dec_norm, dec_sym, enc_bit, enc_norm, enc_sym, put, take
from .tables import CHECK, TOP_BITS


@njit(cache=True, nogil=True, inline="always")
def _bit_length(a):
    n = 0
    while a > 0:
        a >>= 1
        n += 1
    return n


@njit(cache=True, nogil=True)
def encode_levels(vals, segs, width, centre, es, out, bw, raw, zp, sp, lm, tm):
    """``vals``: signed ints of ``width`` bits. Returns False if a buffer ran out."""
    full = np.int64(-1) if width == 64 else (np.int64(1) << width) - 1
    half = np.int64(1) << (width - 1) if width < 64 else np.int64(0)
    low, rng, cache, csize, pos = es[0], es[1], es[2], es[3], es[4]
    acc, nb, rpos = bw[0], bw[1], bw[2]
    room = CHECK * 24 + 64
    ok = True
    for s in range(segs.shape[0]):
        off, rows, cols = segs[s, 0], segs[s, 1], segs[s, 2]
        above = np.zeros(cols + 1, dtype=np.int8)
        cur = np.zeros(cols + 1, dtype=np.int8)
        col_zero = np.ones(cols, dtype=np.bool_)
        csum = np.zeros(cols, dtype=np.int64)
        ccnt = np.zeros(cols, dtype=np.int64)
        tsum = np.int64(0)
        tcnt = np.int64(0)
        for i in range(rows):
            rsum = np.int64(0)
            rcnt = np.int64(0)
            row_zero = True
            base = off + i * cols
            for j in range(cols):
                if (j & (CHECK - 1)) == 0 and (
                    pos + room > out.shape[0] or rpos + room > raw.shape[0]
                ):
                    ok = False
                    break
                d = (np.int64(vals[base + j]) - centre) & full
                if width < 64 and d >= half:
                    d -= np.int64(1) << width  # signed distance in the item's width
                left = cur[j]
                up = above[j + 1]
                zctx = _zero_context(left, up, i, j, row_zero, col_zero[j])
                if d == 0:
                    low, rng = enc_bit(low, rng, zp, zctx, 1)
                    low, rng, cache, csize, pos = enc_norm(low, rng, cache, csize, pos, out)
                    cur[j + 1] = 0
                    continue
                low, rng = enc_bit(low, rng, zp, zctx, 0)
                low, rng, cache, csize, pos = enc_norm(low, rng, cache, csize, pos, out)
                sign = 1 if d < 0 else 0
                low, rng = enc_bit(low, rng, sp, _sign_context(left, up, above[j], i, j), sign)
                low, rng, cache, csize, pos = enc_norm(low, rng, cache, csize, pos, out)
                a = -d if sign else d  # |d| >= 1 (for width 64, -2**63 stays negative: raw)
                n = _bit_length(a) if a > 0 else 64
                p_int, ectx = _exp_context(rsum, rcnt, csum[j], ccnt[j], tsum, tcnt, 64)
                r = n - p_int
                sym = _zigzag(r) if -RESID <= r <= RESID else ESCAPE
                low, rng = enc_sym(low, rng, lm, ectx, sym)
                low, rng, cache, csize, pos = enc_norm(low, rng, cache, csize, pos, out)
                if sym == ESCAPE:
                    acc, nb, rpos = put(acc, nb, rpos, raw, n, 7)
                below = n - 1
                top = min(TOP_BITS, below)
                if top > 0:
                    t = (a >> (below - top)) & ((np.int64(1) << top) - 1)
                    low, rng = enc_sym(low, rng, tm, n, t)
                    low, rng, cache, csize, pos = enc_norm(low, rng, cache, csize, pos, out)
                rest = below - top
                if rest > 32:  # put() takes at most 56 bits at a time
                    acc, nb, rpos = put(acc, nb, rpos, raw, a, 32)
                    acc, nb, rpos = put(acc, nb, rpos, raw, a >> 32, rest - 32)
                elif rest > 0:
                    acc, nb, rpos = put(acc, nb, rpos, raw, a, rest)
                cur[j + 1] = 1 + sign
                row_zero = False
                col_zero[j] = False
                rsum += n
                rcnt += 1
                csum[j] += n
                ccnt[j] += 1
                tsum += n
                tcnt += 1
            if not ok:
                break
            above, cur = cur, above
        if not ok:
            break
    es[0], es[1], es[2], es[3], es[4] = low, rng, cache, csize, pos
    bw[0], bw[1], bw[2] = acc, nb, rpos
    return ok


@njit(cache=True, nogil=True)
def decode_levels(outv, segs, width, centre, ds, inp, br, raw, zp, sp, lm, tm):
    full = np.int64(-1) if width == 64 else (np.int64(1) << width) - 1
    code, rng, pos = ds[0], ds[1], ds[2]
    acc, nb, rpos = br[0], br[1], br[2]
    for s in range(segs.shape[0]):
        off, rows, cols = segs[s, 0], segs[s, 1], segs[s, 2]
        above = np.zeros(cols + 1, dtype=np.int8)
        cur = np.zeros(cols + 1, dtype=np.int8)
        col_zero = np.ones(cols, dtype=np.bool_)
        csum = np.zeros(cols, dtype=np.int64)
        ccnt = np.zeros(cols, dtype=np.int64)
        tsum = np.int64(0)
        tcnt = np.int64(0)
        for i in range(rows):
            rsum = np.int64(0)
            rcnt = np.int64(0)
            row_zero = True
            base = off + i * cols
            for j in range(cols):
                left = cur[j]
                up = above[j + 1]
                zctx = _zero_context(left, up, i, j, row_zero, col_zero[j])
                zero, code, rng = dec_bit(code, rng, zp, zctx)
                code, rng, pos = dec_norm(code, rng, pos, inp)
                if zero == 1:
                    outv[base + j] = centre & full
                    cur[j + 1] = 0
                    continue
                sign, code, rng = dec_bit(code, rng, sp, _sign_context(left, up, above[j], i, j))
                code, rng, pos = dec_norm(code, rng, pos, inp)
                p_int, ectx = _exp_context(rsum, rcnt, csum[j], ccnt[j], tsum, tcnt, 64)
                sym, code, rng = dec_sym(code, rng, lm, ectx)
                code, rng, pos = dec_norm(code, rng, pos, inp)
                if sym == ESCAPE:
                    n, acc, nb, rpos = take(acc, nb, rpos, raw, 7)
                else:
                    n = p_int + _unzigzag(sym)
                if n < 1:
                    n = np.int64(1)
                elif n > 64:
                    n = np.int64(64)
                below = n - 1
                top = min(TOP_BITS, below)
                a = np.int64(1) << below
                if top > 0:
                    t, code, rng = dec_sym(code, rng, tm, n)
                    code, rng, pos = dec_norm(code, rng, pos, inp)
                    a |= (np.int64(t) & ((np.int64(1) << top) - 1)) << (below - top)
                rest = below - top
                if rest > 32:
                    lo, acc, nb, rpos = take(acc, nb, rpos, raw, 32)
                    hi, acc, nb, rpos = take(acc, nb, rpos, raw, rest - 32)
                    a |= lo | (hi << 32)
                elif rest > 0:
                    bits, acc, nb, rpos = take(acc, nb, rpos, raw, rest)
                    a |= bits
                d = -a if sign else a
                outv[base + j] = (d + centre) & full
                cur[j + 1] = 1 + sign
                row_zero = False
                col_zero[j] = False
                rsum += n
                rcnt += 1
                csum[j] += n
                ccnt[j] += 1
                tsum += n
                tcnt += 1
            above, cur = cur, above
    ds[0], ds[1], ds[2] = code, rng, pos
    br[0], br[1], br[2] = acc, nb, rpos
