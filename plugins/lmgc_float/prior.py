"""The ``float`` prior: a float-structured, shape-aware model with a fast array path.

Used by a pipeline, it codes each part as a whole
(:class:`~lmgc_core.components.interfaces.ArrayCoding`):
floats through the field model of :mod:`.codec`, integers (quantize indices, masks, any other
fixed-size item viewed as unsigned integers) through the level and repeat models of
:mod:`.int_codec` (kernels: ``_float_kernels.c``). As an expert for
symbol-level priors (a mixture with a language model) it also offers a hex-digit session
(:mod:`.digits`) built from the same field decomposition.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any, ClassVar

import numpy as np

from lmgc_core.components.interfaces import JSON, ArrayCoding, DeltaCoding, Prior, PriorSession
from lmgc_core.util.errors import ConfigError, StreamError

from . import codec
from .formats import as_uint, check_layout, float_format, from_uint, segments

VERSION = 1
BLOCK_VALUES = 1 << 20
"""Values per independently coded block: big enough that model learning is amortised, small
enough that a 100 MB tensor gives dozens of blocks for the cores."""
LEVEL_FAST = 1
"""Semi-static fields and interleaved rANS (:mod:`.fast`): decodes at memory-copy-like speed. The
default of a new prior; its streams record ``"level": 1``, so no later default reinterprets them."""
LEVEL_MAX = 2
"""Today's adaptive context model (:mod:`.codec`). A stream whose header has no ``level`` was made
at this level (the default before levels, and until the fast level became it), so
:meth:`FloatPrior.get_config` leaves it out there and a recorded config without one rebuilds at
it (``recorded_defaults``, applied by :func:`lmgc_core.components.registry.recorded`)."""
LEVELS = (LEVEL_FAST, LEVEL_MAX)
FAST_BLOCK_VALUES = 1 << 18
"""The fast level's default block: its frequency tables are per block, and smaller blocks follow
the tensors' changing statistics (PP-OCRv4 bf16 weights: 67.3 % at 2^18 values against 68.0 % at
2^20) at no cost in speed; they also give more blocks for the cores."""


class FloatPrior(Prior, ArrayCoding, DeltaCoding):
    name = "float"
    thread_safe = True
    default_window = 512  # digit path only: the model ignores windows beyond their cut
    default_batch_size = 16384
    recorded_defaults: ClassVar[dict[str, Any]] = {"level": LEVEL_MAX}
    """A header without ``level`` means the highest level, forever (see :data:`LEVEL_MAX`), while
    a new prior built without one is fast (:data:`LEVEL_FAST`)."""

    def __init__(
        self,
        layout: Sequence[Any] | None = None,
        block_values: int | None = None,
        level: int = LEVEL_FAST,
    ):
        if not isinstance(level, int) or isinstance(level, bool) or level not in LEVELS:
            raise ConfigError(f"float prior: level must be one of {list(LEVELS)}, not {level!r}")
        self.level = level
        self.layout = check_layout(layout)
        self._default_blocks = block_values is None  # a stream's own size is then accepted
        if block_values is None:
            block_values = FAST_BLOCK_VALUES if level == LEVEL_FAST else BLOCK_VALUES
        if (
            not isinstance(block_values, int)
            or isinstance(block_values, bool)
            or not 1 <= block_values <= 1 << 28
        ):
            raise ConfigError(
                f"block_values must be an integer in [1, 2**28], not {block_values!r}"
            )
        self.block_values = block_values

    def get_config(self) -> JSON:
        layout = None if self.layout is None else [list(s) for s in self.layout]
        config: dict[str, Any] = {"layout": layout, "block_values": self.block_values}
        if self.level != LEVEL_MAX:  # streams without a level keep meaning the highest
            config["level"] = self.level
        return config

    def fingerprint(self) -> JSON:
        fp: dict[str, Any] = {"prior": "float", "version": VERSION, **self.get_config()}
        if self.level == LEVEL_FAST:
            from .fast import FAST_VERSION

            fp["fast_version"] = FAST_VERSION
        return fp

    @property
    def value_checksum(self) -> str | None:
        """The fast level checks every block's values against a checksum in the block, so its
        streams need no SHA-256 of the whole array (see :meth:`Pipeline.compress`)."""
        if self.level != LEVEL_FAST:
            return None
        from .fast import BLOCK_CHECKSUM

        return BLOCK_CHECKSUM

    def for_stream(self, recorded: Mapping[str, Any]) -> Prior:
        """The prior at the level the stream records (a stream decodes without being told its
        level); every other setting must match as usual."""
        level = recorded.get("level", LEVEL_MAX) if isinstance(recorded, Mapping) else None
        if level == LEVEL_FAST:  # older fast-level streams keep decoding
            from .fast import readable

            recorded = readable(recorded)
        if level != self.level and level in LEVELS and not isinstance(level, bool):
            blocks = recorded.get("block_values") if self._default_blocks else self.block_values
            try:
                other = FloatPrior(self.get_config()["layout"], blocks, level)
            except ConfigError:
                other = FloatPrior(self.get_config()["layout"], self.block_values, level)
            other.check_fingerprint(recorded)
            return other
        self.check_fingerprint(recorded)
        return self

    def _blocks(self) -> ModuleType:
        """The block codec of this level: :mod:`.fast` or the adaptive :mod:`.codec`."""
        if self.level == LEVEL_FAST:
            from . import fast

            return fast
        return codec

    # -- array path ------------------------------------------------------------------------------
    def encode_array(
        self, data: np.ndarray, shape: tuple[int, ...], jobs: int = 1
    ) -> tuple[JSON, list[bytes]]:
        data = np.ascontiguousarray(data).reshape(-1)
        if math.prod(shape) != data.size:
            shape = (data.size,)
        fmt = float_format(data.dtype)
        blocks, used = segments(shape, self.layout, self.block_values)
        coded = self._blocks().encode_blocks(as_uint(data), blocks, fmt, jobs)
        meta = {
            "model": "float" if fmt else "int",
            "shape": list(shape),
            "layout": used,
        }
        return meta, coded

    def decode_array(
        self,
        meta: Mapping[str, Any],
        blocks: Sequence[bytes],
        dtype: np.dtype,
        shape: tuple[int, ...],
        jobs: int = 1,
    ) -> np.ndarray:
        dtype = np.dtype(dtype)
        try:
            part_shape = tuple(int(n) for n in meta["shape"])
            model = meta["model"]
        except (KeyError, TypeError, ValueError) as exc:
            raise StreamError(f"float prior: bad part metadata: {exc}") from None
        if math.prod(part_shape) != math.prod(shape) or any(n < 0 for n in part_shape):
            raise StreamError("float prior: part shape does not match its element count")
        fmt = float_format(dtype)
        if model != ("float" if fmt else "int"):
            raise StreamError(f"float prior: part coded with the {model!r} model, dtype {dtype}")
        cuts, _ = segments(part_shape, self.layout, self.block_values)
        if len(cuts) != len(blocks):
            raise StreamError(
                f"float prior: {len(blocks)} blocks where the shape needs {len(cuts)}"
            )
        # the fast kernel writes every value (and checks them against its checksums): no zeroing
        alloc = np.empty if self.level == LEVEL_FAST else np.zeros
        out = alloc(math.prod(part_shape), dtype=np.dtype(f"u{dtype.itemsize}"))
        self._blocks().decode_blocks(blocks, out, cuts, fmt, jobs)
        return from_uint(out, dtype)

    # -- delta path (a tensor against its reference) ---------------------------------------------
    def encode_delta(
        self, data: np.ndarray, base: np.ndarray, shape: tuple[int, ...], jobs: int = 1
    ) -> tuple[JSON, list[bytes]]:
        from . import delta

        return delta.encode(data, base, shape, self.level, jobs)

    def decode_delta(
        self,
        meta: Mapping[str, Any],
        blocks: Sequence[bytes],
        base: np.ndarray,
        dtype: np.dtype,
        shape: tuple[int, ...],
        jobs: int = 1,
    ) -> np.ndarray:
        """The level comes from ``meta`` (the stream's), whatever this prior's level."""
        from . import delta

        return delta.decode(meta, blocks, base, dtype, shape, jobs)

    # -- digit path (expert for symbol-level priors) --------------------------------------------
    def open(
        self,
        alphabet: Sequence[bytes],
        batch_size: int,
        window: int,
        pattern: Sequence[int] = (-1,),
    ) -> PriorSession:
        from .digits import DigitSession

        if len(alphabet) > 32:
            raise ConfigError(
                "the float prior's digit path models hex digits: use the hex serializer "
                f"(this alphabet has {len(alphabet)} symbols)"
            )
        return DigitSession(alphabet, batch_size, pattern)
