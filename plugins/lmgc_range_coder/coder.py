"""Range coding of per-step categorical distributions with constriction.

Probabilities arrive as float64 rows (already floored by :mod:`lmgc_core.coding.probability`);
constriction's leaky quantization additionally guarantees every symbol a non-zero frequency at
its 24-bit precision. A single shared row is coded with one quantized model for all symbols,
which is several times faster than a batch of rows.
"""

from __future__ import annotations

import constriction
import numpy as np

from lmgc_core.components.interfaces import JSON, Decoder, Encoder, EntropyCoder
from lmgc_core.util.errors import StreamError

Categorical = constriction.stream.model.Categorical
RangeEncoder = constriction.stream.queue.RangeEncoder
RangeDecoder = constriction.stream.queue.RangeDecoder
_FAMILY = Categorical(perfect=False)


class _RangeEncoder(Encoder):
    def __init__(self) -> None:
        self._enc = RangeEncoder()

    def encode(self, symbols: np.ndarray, probs: np.ndarray) -> None:
        symbols = np.ascontiguousarray(symbols, dtype=np.int32)
        if symbols.size == 0:
            return
        if probs.shape[0] == 1:
            self._enc.encode(symbols, Categorical(np.ascontiguousarray(probs[0]), perfect=False))
        else:
            self._enc.encode(symbols, _FAMILY, np.ascontiguousarray(probs))

    def finish(self) -> bytes:
        words = self._enc.get_compressed()
        return words.astype("<u4").tobytes()


class _RangeDecoder(Decoder):
    def __init__(self, data: bytes) -> None:
        if len(data) % 4:
            raise StreamError(f"range-coded block of {len(data)} bytes is not whole 32-bit words")
        self._dec = RangeDecoder(np.frombuffer(data, dtype="<u4").astype(np.uint32))

    def decode(self, probs: np.ndarray, count: int) -> np.ndarray:
        if count == 0:
            return np.zeros(0, dtype=np.int32)
        try:
            if probs.shape[0] == 1:
                return self._dec.decode(
                    Categorical(np.ascontiguousarray(probs[0]), perfect=False), count
                )
            return self._dec.decode(_FAMILY, np.ascontiguousarray(probs))
        except (AssertionError, ValueError, RuntimeError) as exc:
            raise StreamError(f"range decoder rejected the block: {exc}") from None


class RangeCoder(EntropyCoder):
    name = "range"

    def get_config(self) -> JSON:
        return {}

    def encoder(self) -> Encoder:
        return _RangeEncoder()

    def decoder(self, data: bytes) -> Decoder:
        return _RangeDecoder(data)
