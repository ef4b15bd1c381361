"""The integer model: what the quantize stage's indices, masks and other integer parts need.

Each value is coded byte by byte, most significant first, over a 256-symbol adaptive model. The
first byte's context is the left neighbour's first byte (runs and repeats, what lzma exploits in
quantized gradients); each further byte's context is the byte before it in the same value.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .rangecoder import dec_norm, dec_sym, enc_norm, enc_sym

CHECK = 4096


def contexts(itemsize: int) -> int:
    return 257 + (itemsize - 1) * 256


@njit(cache=True, nogil=True)
def encode_ints(vals, segs, itemsize, es, out, model):
    """``vals``: unsigned ints (``itemsize`` bytes). Returns False if ``out`` ran out."""
    low, rng, cache, csize, pos = es[0], es[1], es[2], es[3], es[4]
    room = CHECK * (itemsize + 1) * 2 + 64
    ok = True
    for s in range(segs.shape[0]):
        off, rows, cols = segs[s, 0], segs[s, 1], segs[s, 2]
        for i in range(rows):
            prev = np.int64(256)
            base = off + i * cols
            for j in range(cols):
                if (j & (CHECK - 1)) == 0 and pos + room > out.shape[0]:
                    ok = False
                    break
                v = np.int64(vals[base + j])
                ctx = prev
                for k in range(itemsize - 1, -1, -1):
                    byte = (v >> (8 * k)) & 0xFF
                    low, rng = enc_sym(low, rng, model, ctx, byte)
                    low, rng, cache, csize, pos = enc_norm(low, rng, cache, csize, pos, out)
                    if k == itemsize - 1:
                        prev = byte
                    ctx = 257 + (itemsize - 1 - k) * 256 + byte
            if not ok:
                break
        if not ok:
            break
    es[0], es[1], es[2], es[3], es[4] = low, rng, cache, csize, pos
    return ok


@njit(cache=True, nogil=True)
def decode_ints(out, segs, itemsize, ds, inp, model):
    code, rng, pos = ds[0], ds[1], ds[2]
    for s in range(segs.shape[0]):
        off, rows, cols = segs[s, 0], segs[s, 1], segs[s, 2]
        for i in range(rows):
            prev = np.int64(256)
            base = off + i * cols
            for j in range(cols):
                ctx = prev
                v = np.int64(0)
                for k in range(itemsize - 1, -1, -1):
                    byte, code, rng = dec_sym(code, rng, model, ctx)
                    code, rng, pos = dec_norm(code, rng, pos, inp)
                    v |= np.int64(byte) << (8 * k)
                    if k == itemsize - 1:
                        prev = byte
                    ctx = 257 + (itemsize - 1 - k) * 256 + byte
                out[base + j] = v
    ds[0], ds[1], ds[2] = code, rng, pos
