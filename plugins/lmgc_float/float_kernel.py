"""The float model's coding kernels: one pass in raster order over 2-D segments.

Each value is split into fields (``../shared/notes/float-structure.md`` says why these):

* a zero flag, with the context "left / above neighbour zero, row and column all zero so far"
  (dead units and always-zero inputs zero whole rows and columns);
* the sign, with the context "left / above sign, and the sign a rank-1 sign pattern predicts"
  (``s_left ^ s_above ^ s_above_left``);
* the exponent, coded as its difference from a rank-1 prediction of log-magnitude (running row
  mean + column mean - tensor mean, fixed point), with the prediction's fraction and which means
  exist as context; an escape codes it raw when the difference is large;
* the top mantissa bits (up to 4), in the context of that exponent difference;
* the remaining mantissa bits: noise, written raw to a separate bit stream without modelling.

Probability tables are shared by the segments of a block; the running means restart with each
segment (a new tensor or a new run of rows).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .rangecoder import dec_bit, dec_norm, dec_sym, enc_bit, enc_norm, enc_sym, put, take
from .tables import (
    CHECK,
    ESCAPE,
    FRAC,
    MANT_BITS,
    RESID,
    ROOM,
    SIGN_CONTEXTS,
)


@njit(cache=True, nogil=True, inline="always")
def _zigzag(r):
    return 2 * r if r >= 0 else -2 * r - 1


@njit(cache=True, nogil=True, inline="always")
def _unzigzag(z):
    return z >> 1 if (z & 1) == 0 else -((z + 1) >> 1)


@njit(cache=True, nogil=True, inline="always")
def _mean(total, count):
    """``floor(total * 2**FRAC / count)`` through one float64 division: IEEE 754 rounds it
    exactly, so every CPU gets the same number, and it is several times faster than a 64-bit
    integer division (totals and counts stay far below 2**53, so the result is exact)."""
    return np.int64(np.floor(np.float64(total << FRAC) / np.float64(count)))


@njit(cache=True, nogil=True, inline="always")
def _predict(rsum, rcnt, csum, ccnt, tsum, tcnt):
    """Predicted exponent (``FRAC`` fraction bits) and which means it came from (0..3)."""
    if rcnt > 0 and ccnt > 0:
        return _mean(rsum, rcnt) + _mean(csum, ccnt) - _mean(tsum, tcnt), 0
    if rcnt > 0:
        return _mean(rsum, rcnt), 1
    if ccnt > 0:
        return _mean(csum, ccnt), 2
    if tcnt > 0:
        return _mean(tsum, tcnt), 3
    return np.int64(0), 3


@njit(cache=True, nogil=True, inline="always")
def _mant_context(sym):
    if sym == ESCAPE:
        return 4
    r = _unzigzag(sym)
    if r <= -2:
        return 0
    if r >= 2:
        return 3
    return 1 if r <= 0 else 2


@njit(cache=True, nogil=True, inline="always")
def _zero_context(left, up, i, j, row_zero, col_zero_j):
    lz = 2 if j == 0 else (1 if left == 0 else 0)
    uz = 2 if i == 0 else (1 if up == 0 else 0)
    rs = 0 if j == 0 else (1 if row_zero else 2)
    cs = 0 if i == 0 else (1 if col_zero_j else 2)
    return ((lz * 3 + uz) * 3 + rs) * 3 + cs


@njit(cache=True, nogil=True, inline="always")
def _sign_context(left, up, upleft, i, j):
    ls = left if (j > 0 and left != 0) else 0
    us = up if (i > 0 and up != 0) else 0
    lp = 0
    if ls != 0 and us != 0 and upleft != 0:
        lp = 1 + (((ls - 1) ^ (us - 1) ^ (upleft - 1)) & 1)
    return (ls * 3 + us) * 3 + lp


@njit(cache=True, nogil=True, inline="always")
def _exp_context(rsum, rcnt, csum, ccnt, tsum, tcnt, emax):
    """``(predicted exponent, context)`` from the running means."""
    pred, state = _predict(rsum, rcnt, csum, ccnt, tsum, tcnt)
    half = np.int64(1) << (FRAC - 1)
    p_int = (pred + half) >> FRAC
    if p_int < 0:
        p_int = np.int64(0)
    elif p_int > emax:
        p_int = emax
    return p_int, state * 4 + (((pred + half) >> (FRAC - 2)) & 3)


@njit(cache=True, nogil=True)
def encode_segments(vals, segs, width, ebits, mbits, es, rc_out, bw, raw_out, zp, sp, em, mm):
    """Code the values of ``segs`` (``(n, 3)``: offset, rows, cols) from ``vals`` (signed ints of
    the values' width: the float bits). Returns False if an output buffer ran out."""
    full = np.int64(-1) if width == 64 else (np.int64(1) << width) - 1
    emask = (np.int64(1) << ebits) - 1
    mmask = (np.int64(1) << mbits) - 1
    mtop = min(MANT_BITS, mbits)
    low_bits = mbits - mtop
    low_mask = (np.int64(1) << low_bits) - 1
    low, rng, cache, csize, pos = es[0], es[1], es[2], es[3], es[4]
    acc, nb, rpos = bw[0], bw[1], bw[2]
    ok = True
    for s in range(segs.shape[0]):
        off, rows, cols = segs[s, 0], segs[s, 1], segs[s, 2]
        above = np.zeros(cols + 1, dtype=np.int8)  # 0 zero, 1 positive, 2 negative; [0] = pad
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
                # room for the next CHECK values: < 8 bytes each in either stream
                if (j & (CHECK - 1)) == 0 and (
                    pos + ROOM > rc_out.shape[0] or rpos + ROOM > raw_out.shape[0]
                ):
                    ok = False
                    break
                v = np.int64(vals[base + j]) & full
                sign = (v >> (width - 1)) & 1
                e = (v >> mbits) & emask
                m = v & mmask
                left = cur[j]
                up = above[j + 1]
                zctx = _zero_context(left, up, i, j, row_zero, col_zero[j])
                if e == 0 and m == 0:
                    low, rng = enc_bit(low, rng, zp, zctx, 1)
                    low, rng, cache, csize, pos = enc_norm(low, rng, cache, csize, pos, rc_out)
                    low, rng = enc_bit(low, rng, sp, SIGN_CONTEXTS - 1, sign)
                    low, rng, cache, csize, pos = enc_norm(low, rng, cache, csize, pos, rc_out)
                    cur[j + 1] = 0
                    continue
                low, rng = enc_bit(low, rng, zp, zctx, 0)
                low, rng, cache, csize, pos = enc_norm(low, rng, cache, csize, pos, rc_out)
                sctx = _sign_context(left, up, above[j], i, j)
                low, rng = enc_bit(low, rng, sp, sctx, sign)
                low, rng, cache, csize, pos = enc_norm(low, rng, cache, csize, pos, rc_out)
                p_int, ectx = _exp_context(rsum, rcnt, csum[j], ccnt[j], tsum, tcnt, emask)
                r = e - p_int
                sym = _zigzag(r) if -RESID <= r <= RESID else ESCAPE
                low, rng = enc_sym(low, rng, em, ectx, sym)
                low, rng, cache, csize, pos = enc_norm(low, rng, cache, csize, pos, rc_out)
                if sym == ESCAPE:
                    acc, nb, rpos = put(acc, nb, rpos, raw_out, e, ebits)
                if mtop > 0:
                    low, rng = enc_sym(low, rng, mm, _mant_context(sym), m >> low_bits)
                    low, rng, cache, csize, pos = enc_norm(low, rng, cache, csize, pos, rc_out)
                acc, nb, rpos = put(acc, nb, rpos, raw_out, m & low_mask, low_bits)
                cur[j + 1] = 1 + sign
                row_zero = False
                col_zero[j] = False
                rsum += e
                rcnt += 1
                csum[j] += e
                ccnt[j] += 1
                tsum += e
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
def decode_segments(out, segs, width, ebits, mbits, ds, rc_in, br, raw_in, zp, sp, em, mm):
    """Inverse of :func:`encode_segments`: writes the values' bits into ``out``."""
    emask = (np.int64(1) << ebits) - 1
    mtop = min(MANT_BITS, mbits)
    low_bits = mbits - mtop
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
                code, rng, pos = dec_norm(code, rng, pos, rc_in)
                if zero == 1:
                    sign, code, rng = dec_bit(code, rng, sp, SIGN_CONTEXTS - 1)
                    code, rng, pos = dec_norm(code, rng, pos, rc_in)
                    out[base + j] = np.int64(sign) << (width - 1)
                    cur[j + 1] = 0
                    continue
                sctx = _sign_context(left, up, above[j], i, j)
                sign, code, rng = dec_bit(code, rng, sp, sctx)
                code, rng, pos = dec_norm(code, rng, pos, rc_in)
                p_int, ectx = _exp_context(rsum, rcnt, csum[j], ccnt[j], tsum, tcnt, emask)
                sym, code, rng = dec_sym(code, rng, em, ectx)
                code, rng, pos = dec_norm(code, rng, pos, rc_in)
                if sym == ESCAPE:
                    e, acc, nb, rpos = take(acc, nb, rpos, raw_in, ebits)
                else:
                    e = (p_int + _unzigzag(sym)) & emask
                m = np.int64(0)
                if mtop > 0:
                    top, code, rng = dec_sym(code, rng, mm, _mant_context(sym))
                    code, rng, pos = dec_norm(code, rng, pos, rc_in)
                    m = np.int64(top) << low_bits
                rest, acc, nb, rpos = take(acc, nb, rpos, raw_in, low_bits)
                out[base + j] = (np.int64(sign) << (width - 1)) | (e << mbits) | m | rest
                cur[j + 1] = 1 + sign
                row_zero = False
                col_zero[j] = False
                rsum += e
                rcnt += 1
                csum[j] += e
                ccnt[j] += 1
                tsum += e
                tcnt += 1
            above, cur = cur, above
    ds[0], ds[1], ds[2] = code, rng, pos
    br[0], br[1], br[2] = acc, nb, rpos
