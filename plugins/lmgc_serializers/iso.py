"""ISO-8859-1 serializer: one symbol per byte, 256 symbols, no separators (the paper's worst
layout for LMs, kept as a baseline)."""

from __future__ import annotations

import numpy as np

from lmgc_core.components.interfaces import JSON, Serializer
from lmgc_core.util.bytes_layout import check_byte_order, from_bytes, to_bytes


class IsoSerializer(Serializer):
    name = "iso"

    def __init__(self, byte_order: str = "big") -> None:
        self.byte_order = check_byte_order(byte_order)
        self.alphabet = tuple(bytes([b]) for b in range(256))
        self.pattern = (-1,)
        self.free_symbols = tuple(range(256))

    def get_config(self) -> JSON:
        return {"byte_order": self.byte_order}

    def n_symbols(self, n_bytes: int) -> int:
        return n_bytes

    def to_symbols(self, data: np.ndarray) -> np.ndarray:
        return to_bytes(data, self.byte_order).astype(np.uint16)

    def from_symbols(self, symbols: np.ndarray, dtype: np.dtype, count: int) -> np.ndarray:
        return from_bytes(
            np.asarray(symbols).astype(np.uint8), np.dtype(dtype), count, self.byte_order
        )
