"""The four component interfaces of an lmgc pipeline.

A pipeline is ``stages -> serializer -> (prior + entropy coder)``:

* a :class:`Stage` maps arrays to arrays (the lossy quantize / sparsify steps live here);
* a :class:`Serializer` turns the bytes of an array into symbols over a small alphabet, some of
  them *forced* (separators, ``0x`` prefixes) and therefore free to code;
* a :class:`Prior` predicts each next symbol, stepping over a batch of independent windows;
* an :class:`EntropyCoder` turns symbols plus their distributions into bytes and back.

Priors and coders are kept apart (as in CompressAI): a prior only ever produces *scores*, and
:mod:`lmgc_core.coding.probability` turns scores into the float64 distributions that the coder
sees, in
one place, identically for encoder and decoder.
"""

from __future__ import annotations

import contextlib
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, NamedTuple

import numpy as np

from lmgc_core.util.errors import MismatchError

JSON = dict[str, Any]


class Component(ABC):
    """Something with a registered name and JSON-serialisable options (numcodecs-style)."""

    name: ClassVar[str] = ""

    @abstractmethod
    def get_config(self) -> JSON:
        """Options that rebuild an equivalent component via its factory (name not included)."""


class Serializer(Component):
    """Array bytes <-> a symbol stream.

    The stream is periodic: position ``i`` of the stream is forced to symbol ``pattern[i % period]``
    when that entry is ``>= 0``, and carries data otherwise. Forced symbols cost zero bits but are
    fed to the prior as context. Streams always hold a whole number of periods.
    """

    alphabet: tuple[bytes, ...]
    """The text of each symbol; an LM prior maps each one to a single vocabulary token."""
    pattern: tuple[int, ...]
    """Per position within a period: the forced symbol index, or -1 for a data symbol."""
    free_symbols: tuple[int, ...]
    """The symbol indices a data position can take (the coder's alphabet, in this order)."""

    @property
    def period(self) -> int:
        return len(self.pattern)

    @abstractmethod
    def to_symbols(self, data: np.ndarray) -> np.ndarray:
        """Serialize a 1-D numeric array to a 1-D ``uint16`` array of symbol indices."""

    @abstractmethod
    def from_symbols(self, symbols: np.ndarray, dtype: np.dtype, count: int) -> np.ndarray:
        """Inverse of :meth:`to_symbols`: rebuild ``count`` items of ``dtype``."""

    @abstractmethod
    def n_symbols(self, n_bytes: int) -> int:
        """Length of the symbol stream for ``n_bytes`` of input (a multiple of ``period``)."""


class ContextScores(NamedTuple):
    """Scores shared by groups of rows: row ``r`` is scored by ``table[rows[r]]``.

    Lets a cheap prior (few distinct contexts) have each step coded with one quantized model per
    context instead of one per row, which is what makes it fast."""

    table: np.ndarray
    """``(C, A)`` scores, one row per context."""
    rows: np.ndarray | None = None
    """``(B,)`` context index of every row; ``None``: ``table`` has one row per batch row (or a
    single row for all)."""
    linear: bool = False
    """``False``: log-probabilities up to a per-row constant (logits). ``True``: non-negative
    weights proportional to the probabilities (counts), turned into probabilities by exact IEEE
    division alone: no exp/log, so the coder sees the same numbers on every CPU. Non-LM priors
    should use linear scores to keep their streams portable."""


class PriorSession(ABC):
    """A prior's state while it steps over one batch of ``B`` windows in lock-step.

    Every method returns *scores* for the alphabet given to :meth:`Prior.open`: an array of shape
    ``(B, A)``, or ``(1, A)`` when one row serves every window, or :class:`ContextScores`. Scores
    are log-probabilities up to a per-row constant (logits are fine). Rows of finished windows are
    still fed (padding) so the batch layout never changes; their scores are ignored.
    """

    @abstractmethod
    def start(self, prefix: np.ndarray) -> np.ndarray:
        """Condition every window on its start (BOS for an LM) followed by ``prefix`` (``(B, k)``
        forced symbols, ``k`` may be 0) and score the next symbol."""

    @abstractmethod
    def advance(self, symbols: np.ndarray) -> np.ndarray:
        """Append ``symbols`` (``(B, k)``, ``k >= 1``) to every window and score the next symbol."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release per-batch resources (KV caches...)."""


class FeedingSession(PriorSession):
    """A session whose scores follow from what it was fed alone: :meth:`start` and
    :meth:`advance` both feed the symbols (:meth:`_feed`), then score (:meth:`_scores`)."""

    @abstractmethod
    def _feed(self, symbols: np.ndarray) -> None: ...

    @abstractmethod
    def _scores(self) -> Any: ...

    def start(self, prefix: np.ndarray) -> Any:
        self._feed(prefix)
        return self._scores()

    def advance(self, symbols: np.ndarray) -> Any:
        self._feed(symbols)
        return self._scores()


class Prior(Component):
    """A next-symbol predictor. Encoder and decoder drive it through identical calls."""

    default_batch_size: ClassVar[int] = 8
    default_window: ClassVar[int] = 2048
    """Tokens per window (BOS included) when the pipeline config leaves ``window`` unset."""
    thread_safe: ClassVar[bool] = False
    """True when several threads may use this prior at once (each call opens its own session and
    shares no mutable state). The codecs and ``--jobs`` then code chunks / blocks concurrently;
    a prior that must serialize (an LM on one device) leaves it False and is used by one thread
    at a time."""
    wants_free_symbols: ClassVar[bool] = False
    """True when :meth:`open` takes a ``free_symbols`` keyword: the symbols a data position can
    take, in the coder's order (a mixture renormalises its experts over exactly those)."""

    @abstractmethod
    def fingerprint(self) -> JSON:
        """Everything decoding must reproduce (model hash, backend and version, dtype, device
        kind, threads...). Stored in the stream header and checked by :meth:`check_fingerprint`."""

    @abstractmethod
    def open(
        self,
        alphabet: Sequence[bytes],
        batch_size: int,
        window: int,
        pattern: Sequence[int] = (-1,),
    ) -> PriorSession:
        """Start a session over ``batch_size`` windows of at most ``window`` tokens each.

        ``pattern`` is the serializer's forced-symbol pattern (period ``len(pattern)``, e.g. 9 for
        ``3f800000 ``): windows start at a period boundary, so a prior may use the position
        within the period as context. LM priors can ignore it."""

    def teacher_forced_scores(
        self, alphabet: Sequence[bytes], windows: np.ndarray
    ) -> np.ndarray | None:
        """Optional fast path for ``estimate``: scores ``(n, L, A)`` for every position of the
        ``(n, L)`` windows in one pass. Good for an estimate only, never for coding. ``None``
        means "not supported", and the estimate falls back to the step loop."""
        return None

    def fallback(self) -> Prior | None:
        """A prior whose stream the pipeline also makes, keeping the smaller of the two (ties go
        to the fallback). Its stream's header names the fallback alone, so decoding it needs
        nothing of this prior (no model). ``None`` (the default): no fallback. A mixture uses it
        to never be larger than its fast expert."""
        return None

    def for_stream(self, recorded: Mapping[str, Any]) -> Prior:
        """The prior that decodes a stream whose header recorded ``recorded`` as fingerprint.

        The default checks the fingerprint and returns ``self``; a prior whose numbers changed
        between versions can return an instance that reproduces the old ones, so old streams
        still decode."""
        self.check_fingerprint(recorded)
        return self

    def check_fingerprint(self, recorded: Mapping[str, Any]) -> None:
        """Refuse to decode a stream made with anything that changes the prior's numbers. The
        fingerprint is compared as the header holds it, through JSON (a tuple, such as
        ``sys.version_info[:2]``, is a list there: every stream was refused)."""
        mine = self.fingerprint()
        with contextlib.suppress(TypeError, ValueError):  # not JSON: no header holds it
            mine = json.loads(json.dumps(mine))
        diffs = [
            f"{key}: stream has {recorded.get(key)!r}, this prior has {mine.get(key)!r}"
            for key in sorted(set(mine) | set(recorded))
            if mine.get(key) != recorded.get(key)
        ]
        if diffs:
            what = f"prior {self.name!r} differs from the one that made the stream (" + (
                "; ".join(diffs) + ")"
            )
            raise MismatchError(
                f"{what}; decode with the same prior settings, or pass force=True / --force to "
                "try anyway",
                what,
            )


class Encoder(ABC):
    @abstractmethod
    def encode(self, symbols: np.ndarray, probs: np.ndarray) -> None:
        """Code ``symbols`` (1-D ints) under ``probs`` (``(n, A)``, or ``(1, A)`` for all)."""

    @abstractmethod
    def finish(self) -> bytes:
        """Flush and return the coded bytes."""


class Decoder(ABC):
    @abstractmethod
    def decode(self, probs: np.ndarray, count: int) -> np.ndarray:
        """Decode ``count`` symbols under ``probs`` (``(count, A)`` or ``(1, A)``)."""


class EntropyCoder(Component):
    """Symbols + per-step distributions <-> bytes. Decoding is incremental, because the decoder
    only learns the next distribution after the previous symbols."""

    @abstractmethod
    def encoder(self) -> Encoder: ...

    @abstractmethod
    def decoder(self, data: bytes) -> Decoder: ...


class Stage(Component):
    """An array -> parts pre-stage. ``forward`` may be lossy; then decoding returns exactly the
    stage's own reconstruction ``inverse(forward(x))``, bit for bit.

    Parts are named 1-D arrays; a pipeline starts with ``{"data": x.ravel()}`` and each stage
    rewrites the dict. ``state`` is JSON stored in the stream header (scales, seeds...).
    """

    lossless: ClassVar[bool] = False

    @abstractmethod
    def forward(self, parts: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], JSON]: ...

    @abstractmethod
    def inverse(self, parts: dict[str, np.ndarray], state: JSON) -> dict[str, np.ndarray]: ...


class ArrayCoding(ABC):
    """Optional fast path of a prior: code a whole array part at once, without the symbol step
    loop (no serializer, no per-symbol Python). A prior that also implements it is used this way
    by the pipeline; its :class:`PriorSession` path stays available to mixtures over symbols.

    ``shape`` is the part's tensor shape (``(n,)`` when unknown); the prior may use it as context.
    The returned ``meta`` is JSON stored in the header beside the part, ``blocks`` are
    independently decodable byte strings (each gets its own length and CRC32 in the container).
    """

    @abstractmethod
    def encode_array(
        self, data: np.ndarray, shape: tuple[int, ...], jobs: int = 1
    ) -> tuple[JSON, list[bytes]]: ...

    @abstractmethod
    def decode_array(
        self,
        meta: Mapping[str, Any],
        blocks: Sequence[bytes],
        dtype: np.dtype,
        shape: tuple[int, ...],
        jobs: int = 1,
    ) -> np.ndarray: ...


class DeltaCoding(ABC):
    """Optional path of a prior: code an array part against a reference of the same dtype and
    shape (a checkpoint against the one before it, a fine-tune against its base). The pipeline
    uses it when ``compress`` gets a ``base``; the stream then records the base's SHA-256, and
    decoding needs that very base.

    ``meta`` is JSON stored in the header beside the part; ``blocks`` are independently decodable
    byte strings, as for :class:`ArrayCoding`. ``decode_delta`` returns the part flat (``(n,)``
    items of ``dtype``) and must detect a base other than the one coded against (each block's
    checksum of its decoded values does) rather than return wrong values.
    """

    @abstractmethod
    def encode_delta(
        self, data: np.ndarray, base: np.ndarray, shape: tuple[int, ...], jobs: int = 1
    ) -> tuple[JSON, list[bytes]]: ...

    @abstractmethod
    def decode_delta(
        self,
        meta: Mapping[str, Any],
        blocks: Sequence[bytes],
        base: np.ndarray,
        dtype: np.dtype,
        shape: tuple[int, ...],
        jobs: int = 1,
    ) -> np.ndarray: ...
