"""Hexadecimal serializer: ``3f800000 bf000000 ...``.

Options follow the paper's ablations: bytes per group (1, 2, 3, 4, 8, or 0 for no grouping),
a separator after every group (space = H_s, none = H_n, comma = H_c, ...), an optional ``0x``
prefix before every group, and the byte order of each value (most significant first by default).
Separators and prefixes are *forced* symbols: the prior sees them, the coder spends nothing.
"""

from __future__ import annotations

import numpy as np

from lmgc_core.components.interfaces import JSON, Serializer
from lmgc_core.util.bytes_layout import check_byte_order, from_bytes, to_bytes
from lmgc_core.util.errors import ConfigError

HEX_DIGITS = b"0123456789abcdef"
SEPARATORS = ("", " ", ",", ", ", ";")
PREFIXES = ("", "0x")
GROUPS = (0, 1, 2, 3, 4, 8)


class HexSerializer(Serializer):
    name = "hex"

    def __init__(
        self,
        bytes_per_group: int = 4,
        separator: str = " ",
        prefix: str = "",
        byte_order: str = "big",
    ) -> None:
        if (
            isinstance(bytes_per_group, bool)
            or not isinstance(bytes_per_group, int)
            or (bytes_per_group not in GROUPS)
        ):
            raise ConfigError(f"bytes_per_group must be one of {GROUPS}, not {bytes_per_group!r}")
        if separator not in SEPARATORS:
            raise ConfigError(f"separator must be one of {SEPARATORS}, not {separator!r}")
        if prefix not in PREFIXES:
            raise ConfigError(f"prefix must be one of {PREFIXES}, not {prefix!r}")
        if bytes_per_group == 0 and (separator or prefix):
            raise ConfigError("bytes_per_group=0 (no grouping) takes no separator and no prefix")
        self.bytes_per_group = bytes_per_group
        self.separator = separator
        self.prefix = prefix
        self.byte_order = check_byte_order(byte_order)

        extra = sorted({c for c in (prefix + separator).encode() if c not in HEX_DIGITS})
        self.alphabet = tuple(bytes([c]) for c in HEX_DIGITS) + tuple(bytes([c]) for c in extra)
        index = {sym: i for i, sym in enumerate(self.alphabet)}
        digits_per_group = 2 * max(bytes_per_group, 1)
        self.pattern = (
            tuple(index[bytes([c])] for c in prefix.encode())
            + (-1,) * digits_per_group
            + tuple(index[bytes([c])] for c in separator.encode())
        )
        self.free_symbols = tuple(range(16))
        self._group = max(bytes_per_group, 1)
        self._free_cols = np.flatnonzero(np.array(self.pattern) < 0)

    def get_config(self) -> JSON:
        return {
            "bytes_per_group": self.bytes_per_group,
            "separator": self.separator,
            "prefix": self.prefix,
            "byte_order": self.byte_order,
        }

    def n_symbols(self, n_bytes: int) -> int:
        return -(-n_bytes // self._group) * self.period

    def to_symbols(self, data: np.ndarray) -> np.ndarray:
        raw = to_bytes(data, self.byte_order)
        n_groups = -(-raw.size // self._group)
        padded = np.zeros(n_groups * self._group, dtype=np.uint8)
        padded[: raw.size] = raw
        digits = np.empty((padded.size, 2), dtype=np.uint16)
        digits[:, 0] = padded >> 4
        digits[:, 1] = padded & 15
        out = np.tile(np.array(self.pattern, dtype=np.int32), (n_groups, 1))
        out[:, self._free_cols] = digits.reshape(n_groups, len(self._free_cols))
        return out.astype(np.uint16).reshape(-1)

    def from_symbols(self, symbols: np.ndarray, dtype: np.dtype, count: int) -> np.ndarray:
        groups = np.asarray(symbols).reshape(-1, self.period)
        digits = groups[:, self._free_cols].reshape(-1, 2).astype(np.uint8)
        raw = (digits[:, 0] << 4) | digits[:, 1]
        return from_bytes(raw, np.dtype(dtype), count, self.byte_order)
