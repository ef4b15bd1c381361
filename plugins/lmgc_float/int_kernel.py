"""The integer model: what the quantize stage's indices, masks and other integer parts need.

Quantized gradients are runs and repeats (dead units and always-zero inputs give whole rows and
columns of one index; rows of a rank-1 gradient with similar scales quantize to the same index
sequence), which is what lzma exploits. A match model finds the last place where the previous
four values occurred and predicts the value that followed them; a flag "equals the prediction",
in the context of the match's length, codes it. Otherwise the value codes one binary flag,
"same as the left neighbour", in the context of the tensor structure (is the row constant so far,
is the column constant so far, does the value above equal the left one, was the left value a
repeat too). Otherwise its first byte goes bit by bit down a binary tree in the context of the
left value's first byte (adaptive binary models learn within a few dozen values, where
256-symbol tables need thousands). Further bytes (16-bit and wider items) use a 256-symbol model
in the context of the byte before them in the same value.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .rangecoder import dec_bit, dec_norm, dec_sym, enc_bit, enc_norm, enc_sym
from .tables import CHECK, HASH_BITS, MATCH_MIN


@njit(cache=True, nogil=True, inline="always")
def _hash(vals, t):
    """Hash of the ``MATCH_MIN`` values ending at flat index ``t``."""
    h = np.int64(0)
    for k in range(MATCH_MIN):
        h = (h * 0x2F0B3C5 + (np.int64(vals[t - k]) & 0xFFFFFFFF) + 1) & 0xFFFFFFFFFFFF
    return (h ^ (h >> 21)) & ((1 << HASH_BITS) - 1)


@njit(cache=True, nogil=True, inline="always")
def _match_step(vals, t, start, v, ptr, length, table):
    """After the value at flat index ``t`` (``v``): extend or drop the match, look a new one up,
    and remember this position. Returns the new ``(ptr, length)``."""
    if ptr >= 0 and np.int64(vals[ptr]) == v:
        ptr += 1
        length += 1
    else:
        ptr = -1
        length = 0
    if t - start + 1 >= MATCH_MIN:
        h = _hash(vals, t)
        if ptr < 0:
            cand = table[h]
            if cand >= 0:
                ptr = cand
        table[h] = t + 1
    return ptr, length


@njit(cache=True, nogil=True, inline="always")
def _repeat_context(i, j, row_const, col_const_j, up_same, left_repeat):
    rs = 0 if j < 2 else (1 if row_const else 2)
    cs = 0 if i == 0 else (1 if col_const_j else 2)
    us = 0 if i == 0 else (1 if up_same else 2)
    return ((rs * 3 + cs) * 3 + us) * 2 + (1 if left_repeat else 0)


@njit(cache=True, nogil=True)
def encode_ints(vals, segs, itemsize, es, out, matches, table, repeat, tree, model):
    """``vals``: the items as signed ints of ``itemsize`` bytes. Returns False if ``out`` ran
    out of room."""
    low, rng, cache, csize, pos = es[0], es[1], es[2], es[3], es[4]
    room = CHECK * (itemsize + 2) * 2 + 64
    shift = 8 * (itemsize - 1)
    ok = True
    start = segs[0, 0] if segs.shape[0] else 0
    ptr = np.int64(-1)
    length = np.int64(0)
    for s in range(segs.shape[0]):
        off, rows, cols = segs[s, 0], segs[s, 1], segs[s, 2]
        col_const = np.ones(cols, dtype=np.bool_)
        for i in range(rows):
            base = off + i * cols
            row_const = True
            left_repeat = False
            left = np.int64(0)
            for j in range(cols):
                if (j & (CHECK - 1)) == 0 and pos + room > out.shape[0]:
                    ok = False
                    break
                t = base + j
                v = np.int64(vals[t])
                up = np.int64(vals[t - cols]) if i > 0 else v
                hit = False
                if ptr >= 0:
                    guess = np.int64(vals[ptr])
                    mctx = min(length, 15) * 2 + (1 if (j > 0 and guess == left) else 0)
                    hit = guess == v
                    low, rng = enc_bit(low, rng, matches, mctx, 1 if hit else 0)
                    low, rng, cache, csize, pos = enc_norm(low, rng, cache, csize, pos, out)
                ptr, length = _match_step(vals, t, start, v, ptr, length, table)
                if hit:
                    if i > 0:
                        col_const[j] = col_const[j] and v == up
                    same = j > 0 and v == left
                    left_repeat = same
                    row_const = row_const and (same or j == 0)
                    left = v
                    continue
                if j > 0:
                    ctx = _repeat_context(i, j, row_const, col_const[j], up == left, left_repeat)
                    same = v == left
                    low, rng = enc_bit(low, rng, repeat, ctx, 1 if same else 0)
                    low, rng, cache, csize, pos = enc_norm(low, rng, cache, csize, pos, out)
                    left_repeat = same
                    row_const = row_const and same
                    if i > 0:
                        col_const[j] = col_const[j] and v == up
                    if same:
                        continue
                    node_base = ((left >> shift) & 0xFF) * 256
                else:
                    if i > 0:
                        col_const[j] = col_const[j] and v == up
                    node_base = 256 * 256
                left = v
                top = (v >> shift) & 0xFF
                node = 1
                for b in range(7, -1, -1):
                    bit = (top >> b) & 1
                    low, rng = enc_bit(low, rng, tree, node_base + node, bit)
                    low, rng, cache, csize, pos = enc_norm(low, rng, cache, csize, pos, out)
                    node = 2 * node + bit
                byte = top
                for k in range(itemsize - 2, -1, -1):
                    ctx = (itemsize - 2 - k) * 256 + byte
                    byte = (v >> (8 * k)) & 0xFF
                    low, rng = enc_sym(low, rng, model, ctx, byte)
                    low, rng, cache, csize, pos = enc_norm(low, rng, cache, csize, pos, out)
            if not ok:
                break
        if not ok:
            break
    es[0], es[1], es[2], es[3], es[4] = low, rng, cache, csize, pos
    return ok


@njit(cache=True, nogil=True)
def decode_ints(out, segs, itemsize, ds, inp, matches, table, repeat, tree, model):
    code, rng, pos = ds[0], ds[1], ds[2]
    shift = 8 * (itemsize - 1)
    start = segs[0, 0] if segs.shape[0] else 0
    ptr = np.int64(-1)
    length = np.int64(0)
    for s in range(segs.shape[0]):
        off, rows, cols = segs[s, 0], segs[s, 1], segs[s, 2]
        col_const = np.ones(cols, dtype=np.bool_)
        for i in range(rows):
            base = off + i * cols
            row_const = True
            left_repeat = False
            left = np.int64(0)
            for j in range(cols):
                t = base + j
                up = np.int64(out[t - cols]) if i > 0 else np.int64(0)
                if ptr >= 0:
                    guess = np.int64(out[ptr])
                    mctx = min(length, 15) * 2 + (1 if (j > 0 and guess == left) else 0)
                    hit, code, rng = dec_bit(code, rng, matches, mctx)
                    code, rng, pos = dec_norm(code, rng, pos, inp)
                    if hit == 1:
                        out[t] = guess
                        v = np.int64(out[t])
                        ptr, length = _match_step(out, t, start, v, ptr, length, table)
                        if i > 0:
                            col_const[j] = col_const[j] and v == up
                        same = j > 0 and v == left
                        left_repeat = same
                        row_const = row_const and (same or j == 0)
                        left = v
                        continue
                if j > 0:
                    ctx = _repeat_context(i, j, row_const, col_const[j], up == left, left_repeat)
                    same, code, rng = dec_bit(code, rng, repeat, ctx)
                    code, rng, pos = dec_norm(code, rng, pos, inp)
                    left_repeat = same == 1
                    row_const = row_const and left_repeat
                    if left_repeat:
                        out[t] = left
                        ptr, length = _match_step(out, t, start, left, ptr, length, table)
                        if i > 0:
                            col_const[j] = col_const[j] and left == up
                        continue
                    node_base = ((left >> shift) & 0xFF) * 256
                else:
                    node_base = 256 * 256
                node = 1
                for _ in range(8):
                    bit, code, rng = dec_bit(code, rng, tree, node_base + node)
                    code, rng, pos = dec_norm(code, rng, pos, inp)
                    node = 2 * node + bit
                byte = np.int64(node - 256)
                v = byte << shift
                for k in range(itemsize - 2, -1, -1):
                    ctx = (itemsize - 2 - k) * 256 + byte
                    sym, code, rng = dec_sym(code, rng, model, ctx)
                    code, rng, pos = dec_norm(code, rng, pos, inp)
                    byte = np.int64(sym)
                    v |= byte << (8 * k)
                out[t] = v
                v = np.int64(out[t])  # as the encoder reads it (sign-extended)
                ptr, length = _match_step(out, t, start, v, ptr, length, table)
                if i > 0:
                    col_const[j] = col_const[j] and v == up
                left = v
    ds[0], ds[1], ds[2] = code, rng, pos
