"""Block coding of integer inputs (quantizer indices, sparsify parts): two models, the smaller
block wins. A block starts with its model's tag. The kernels are :func:`kernels.int_kernels`.
"""

from __future__ import annotations

import struct

import numpy as np

from lmgc_core.util.errors import StreamError

from . import tables
from .kernels import int_kernels, signed

_INT_HEAD = struct.Struct("<BQI")  # model tag, centre (two's complement), range-coded length
LEVELS, REPEATS = 1, 2


def _centre(bits: np.ndarray, segs: np.ndarray) -> int:
    """The block's most common value (items of up to 2 bytes), else 0."""
    if bits.dtype.itemsize > 2 or not len(segs):
        return 0
    start = int(segs[0, 0])
    stop = int(segs[-1, 0] + segs[-1, 1] * segs[-1, 2])
    counts = np.bincount(bits[start:stop], minlength=1)
    return int(np.argmax(counts))


def _levels_block(bits: np.ndarray, segs: np.ndarray, n: int) -> bytes:
    k = int_kernels()
    centre = _centre(bits, segs)
    size = n * bits.dtype.itemsize // 2 + 4096
    while True:
        out = np.empty(size, dtype=np.uint8)
        raw = np.empty(size, dtype=np.uint8)
        es = tables.encoder_state()
        bw = np.zeros(3, dtype=np.int64)
        width = 8 * bits.dtype.itemsize
        if k.encode_levels(signed(bits), segs, width, centre, es, out, bw, raw,
                           *tables.level_models()):  # fmt: skip
            break
        size = size * 2 + n * bits.dtype.itemsize
    rc_len = k.encoder_finish(es, out)
    raw_len = k.flush_bits(bw, raw)
    head = _INT_HEAD.pack(LEVELS, centre & 0xFFFFFFFFFFFFFFFF, rc_len)
    return head + out[:rc_len].tobytes() + raw[:raw_len].tobytes()


def _repeats_block(bits: np.ndarray, segs: np.ndarray, n: int) -> bytes:
    k = int_kernels()
    itemsize = bits.dtype.itemsize
    size = n * itemsize // 2 + 4096
    while True:
        out = np.empty(size, dtype=np.uint8)
        es = tables.encoder_state()
        if k.encode_ints(signed(bits), segs, itemsize, es, out, *tables.repeat_models(itemsize)):
            break
        size = size * 2 + n * itemsize
    return bytes([REPEATS]) + out[: k.encoder_finish(es, out)].tobytes()


def encode_int_block(bits: np.ndarray, segs: np.ndarray) -> bytes:
    """Code the integers of ``segs`` with both integer models and keep the smaller block: the
    level model suits quantizer indices, the repeat model packed bits and other byte data."""
    n = int(segs[:, 1].astype(np.int64) @ segs[:, 2].astype(np.int64)) if len(segs) else 0
    return min(_levels_block(bits, segs, n), _repeats_block(bits, segs, n), key=len)


def decode_int_block(block: bytes, out_bits: np.ndarray, segs: np.ndarray) -> None:
    if not block:
        raise StreamError("integer block is empty")
    buf = np.frombuffer(block, dtype=np.uint8)
    k = int_kernels()
    ds = tables.decoder_state()
    if block[0] == REPEATS:
        inp = buf[1:]
        k.decoder_init(ds, inp)
        itemsize = out_bits.dtype.itemsize
        k.decode_ints(signed(out_bits), segs, itemsize, ds, inp, *tables.repeat_models(itemsize))
        return
    if block[0] != LEVELS or len(block) < _INT_HEAD.size:
        raise StreamError("integer block has an unknown model tag or a short header")
    _, centre, rc_len = _INT_HEAD.unpack_from(block)
    if rc_len > len(block) - _INT_HEAD.size:
        raise StreamError("integer block's range-coded part runs past the block's end")
    rc_in = buf[_INT_HEAD.size : _INT_HEAD.size + rc_len]
    raw_in = buf[_INT_HEAD.size + rc_len :]
    k.decoder_init(ds, rc_in)
    br = np.zeros(3, dtype=np.int64)
    width = 8 * out_bits.dtype.itemsize
    centre = np.int64(np.uint64(centre).view(np.int64))
    k.decode_levels(signed(out_bits), segs, width, centre, ds, rc_in, br, raw_in,
                    *tables.level_models())  # fmt: skip
