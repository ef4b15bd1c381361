"""``numcodecs`` codec ``lmgc``: an lmgc pipeline as a numcodecs compressor (Zarr v2 arrays, or
anything else that speaks numcodecs).

The codec's configuration *is* the pipeline configuration of :meth:`Pipeline.from_config`
(``stages``, ``serializer``, ``prior``, ``coder``, ``window``, ``batch``, ``level``) plus an
optional ``dtype``. ``LMGC()`` writes the float prior's level into its config (1, fast, by
default); a stored config without one (written before the fast level was the default) means
level 2, what it meant then. ``time_axis`` (an axis, or absent) codes each step along it
against the step before it, inside each chunk (:mod:`lmgc_core.coding.time_axis`)::

    >>> import numcodecs
    >>> codec = numcodecs.get_codec({"id": "lmgc", "prior": {"name": "adaptive"}})
    >>> codec.decode(codec.encode(np.float32([1, 2, 3])))
    array([1., 2., 3.], dtype=float32)

``numcodecs.get_codec({"id": "lmgc", ...})`` works in a fresh interpreter without importing lmgc:
the codec is registered under the ``numcodecs.codecs`` entry-point group.

dtype: a chunk handed over as an ndarray (Zarr v2 does that) is coded with its own dtype and
shape, both recorded in the stream header. Any fixed-size dtype works: complex, datetime64,
timedelta64, fixed bytes ``|S``, unicode ``<U`` and records are coded through a float, integer
or byte view of the same memory, with the real dtype noted in the header so that they decode
exactly; Fortran-ordered arrays are coded in their memory order. Object arrays raise
``TypeError`` (as numcodecs' own codecs do). Raw bytes carry no dtype: give ``dtype="float32"``
(or another numeric dtype) to have them viewed as that dtype, otherwise they are coded as
``uint8`` (lossless still, but the stages then see bytes, not floats).

Each stream is self-contained (header + range-coded blocks), so every chunk decodes on its own.

Pipelines are built once per process and configuration and then reused (:func:`cached_pipeline`),
so a Dask worker builds (and, for LM priors, loads) a prior once, however many chunks it codes.
A prior that declares ``thread_safe = True`` (every call opens its own session) is used by all
threads at once, so Zarr's thread pool codes chunks concurrently. Any other prior (an LM with one
model and KV cache) gets one lock per cached pipeline and codes one chunk at a time per process.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import numpy as np
from numcodecs.abc import Codec
from numcodecs.compat import (
    ensure_contiguous_ndarray,
    ensure_ndarray,
    ensure_ndarray_like,
    ndarray_copy,
)

from lmgc_core.coding import time_axis as series
from lmgc_core.coding.config_file import check_keys
from lmgc_core.coding.recorded import header_errors, recorded_config
from lmgc_core.components import registry
from lmgc_core.components.spec import spec_dict
from lmgc_core.stream import container
from lmgc_core.stream.notes import restore, with_view
from lmgc_core.util.dtypes import coding_view, refuse_masked, user_dtype
from lmgc_core.util.errors import ConfigError, LMGCError, StreamError

PIPELINE_KEYS = ("stages", "serializer", "prior", "coder", "window", "batch", "level")

# --------------------------------------------------------------------------------------------
# Per-process cache of built pipelines (shared with the Zarr v3 codec and the Dask helpers).
# --------------------------------------------------------------------------------------------

Guard = AbstractContextManager[Any]
_CACHE: dict[str, tuple[Any, Guard]] = {}
MAX_CACHED = 64
"""Pipelines kept at most, least recently used dropped first: a store whose chunks record
thousands of configurations (written by someone else) cannot make the cache grow without end."""
_GIVEN: dict[str, str] = {}
"""Cache key of a configuration as given (``_key`` of it, uncanonicalised), for those that found
or built a pipeline: what each Zarr chunk's header records maps to its pipeline directly."""
_CACHE_LOCK = threading.Lock()
_STATS = {"builds": 0, "hits": 0, "encoded": 0, "decoded": 0}
_INTERVALS: deque[tuple[str, float, float, int]] = deque(maxlen=100_000)
_LOG = logging.getLogger(__name__)
"""At DEBUG (``logging.getLogger("lmgc_core.codecs.numcodecs_codec").setLevel(logging.DEBUG)``),
each coded chunk's interval is kept (:func:`chunk_intervals`) and logged; else neither is done:
the log of every chunk held up to 16 MB in each process that coded any."""


def canonical_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The pipeline config with defaults filled in and components as ``{"name": ...}`` dicts
    (no component is built). Raises :class:`ConfigError` on unknown keys."""
    from lmgc_core.coding.pipeline import DEFAULTS

    check_keys(config, DEFAULTS)
    cfg = {**DEFAULTS, **{k: v for k, v in config.items() if v is not None or k == "batch"}}
    if cfg["level"] is None:  # absent means the prior's own default: configs stay as before
        del cfg["level"]

    if not isinstance(cfg["stages"] or [], list | tuple):  # a string's letters: stage names
        raise TypeError(f"stages must be a list, not {cfg['stages']!r}")  # (a header's: a
        # StreamError through codec_errors)
    cfg["stages"] = [spec_dict(s) for s in (cfg["stages"] or [])]
    for key in ("serializer", "prior", "coder"):
        cfg[key] = spec_dict(cfg[key])
    try:
        json.dumps(cfg, allow_nan=False)  # NaN and Infinity are not JSON: zarr.json must be
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"lmgc codec configuration must be JSON-serialisable: {exc}") from None
    return cfg


def pin_level(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` (canonical) with the level its prior codes at written in, when the prior has
    levels and the config names none: today's default for a new codec, the level a config
    without one has always meant inside :func:`registry.recorded` (stored metadata). Either way
    the codec's metadata then says it, so no later default can change what the codec writes."""
    from lmgc_core.coding.pipeline import LEVELLED_PRIORS

    prior = config.get("prior")
    if "level" in config or not isinstance(prior, Mapping) or "level" in prior:
        return config
    if prior.get("name") not in LEVELLED_PRIORS:
        return config
    try:
        built = registry.build("prior", prior["name"], {k: v for k, v in prior.items()
                                                        if k != "name"})  # fmt: skip
    except LMGCError:  # bad options or a missing kernel: the pipeline's build says so, later
        return config
    level = getattr(built, "level", None)
    return config if level is None else {**config, "level": level}


def _key(config: Mapping[str, Any], recorded: bool = False) -> str:
    """The cache key; a recorded config (a header) and a new one differ where an option is left
    out (see :func:`registry.recorded`)."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return "recorded " + text if recorded else text


def cached_pipeline(config: Mapping[str, Any], given: str | None = None) -> tuple[Any, Guard]:
    """The process-wide ``(Pipeline, guard)`` for ``config``, built on first use.

    ``guard`` is a context manager to hold while coding with the pipeline: a no-op for a
    ``thread_safe`` prior (threads code concurrently), a lock of its own otherwise.

    ``given``: a key that determines ``config`` (a chunk header's stream key, as
    :func:`~lmgc_core.coding.pipeline.read_keyed_header` gives it), to find it by in
    :data:`_GIVEN` instead of its JSON text (~25 us of a 64 KB chunk's ~95 us decode)."""
    from lmgc_core.coding.pipeline import Pipeline

    recorded = registry.building_recorded()
    try:  # a chunk's recorded config, as its header has it
        given = _key(config, recorded) if given is None else given
    except (TypeError, ValueError):  # not JSON: canonical_config says so
        given = None
    hit = _given_hit(given) if given is not None else None
    if hit is not None:
        return hit
    # canonicalised once per configuration, not once per chunk (~40 us)
    key = _key(canonical_config(config), recorded)
    with _CACHE_LOCK:
        hit = _CACHE.pop(key, None)
        if hit is not None:
            _CACHE[key] = hit  # most recently used last
            if given is not None:
                _GIVEN[given] = key
            _STATS["hits"] += 1
            return hit
        cfg = canonical_config(config)
        pipeline = Pipeline.from_config(json.loads(json.dumps(cfg)))  # a copy of its own
        guard: Guard = nullcontext() if pipeline.prior.thread_safe else threading.Lock()
        entry = (pipeline, guard)
        _CACHE[key] = entry
        # streams record the resolved config (window, batch, prior options filled in): reading
        # back what this process wrote must reuse this pipeline, not build (load) a second one
        _CACHE.setdefault(_key(canonical_config(pipeline.recorded_config()), recorded=True), entry)
        while len(_CACHE) > MAX_CACHED:
            del _CACHE[next(iter(_CACHE))]
        if len(_GIVEN) > 4 * MAX_CACHED:
            _GIVEN.clear()
        if given is not None:
            _GIVEN[given] = key
        _STATS["builds"] += 1
        return entry


def _given_hit(given: str) -> tuple[Any, Guard] | None:
    """The cached entry :data:`_GIVEN` maps ``given`` to, made the most recently used (a hit,
    counted); ``None`` when there is none."""
    key = _GIVEN.get(given)
    if key is None:
        return None
    with _CACHE_LOCK:
        hit = _CACHE.pop(key, None)
        if hit is not None:
            _CACHE[key] = hit
            _STATS["hits"] += 1
        return hit


@contextmanager
def _timed(op: str) -> Iterator[None]:
    """Count one coded chunk; with :data:`_LOG` at DEBUG, keep and log its wall-clock interval
    too (see :func:`chunk_intervals`)."""
    start = time.time() if _LOG.isEnabledFor(logging.DEBUG) else None
    yield
    interval = None if start is None else (op, start, time.time(), threading.get_ident())
    with _CACHE_LOCK:
        _STATS[op] += 1
        if interval is not None:
            _INTERVALS.append(interval)
    if interval is not None:
        _LOG.debug("%s a chunk from %.6f to %.6f (thread %d)", *interval)


def chunk_intervals() -> list[tuple[str, float, float, int]]:
    """``(op, start, end, thread id)`` of the chunks this process coded while this module's
    logger was at DEBUG (:data:`_LOG`; the last 100,000), ``op`` being ``"encoded"`` or
    ``"decoded"`` and times from :func:`time.time`. Overlapping intervals are chunks that were
    coded at the same time: what shows that the codec scales."""
    with _CACHE_LOCK:
        return list(_INTERVALS)


def pipeline_cache_info() -> dict[str, Any]:
    """How often this process built a pipeline (and so its prior), reused one, and coded a
    chunk (``encoded``/``decoded``), plus the model loads the plugins count (``model_loads``:
    the ``model_loads`` hook, which the LM priors implement). Read it on Dask workers with
    ``client.run(pipeline_cache_info)``."""
    with _CACHE_LOCK:
        return {
            "pid": os.getpid(),
            "builds": _STATS["builds"],
            "hits": _STATS["hits"],
            "encoded": _STATS["encoded"],
            "decoded": _STATS["decoded"],
            "configs": sorted(_CACHE),
            "model_loads": registry.model_loads(),
        }


def clear_pipeline_cache() -> None:
    """Forget every cached pipeline (e.g. to free a loaded model) and zero the counters."""
    with _CACHE_LOCK:
        _CACHE.clear()
        _GIVEN.clear()
        _INTERVALS.clear()
        for key in _STATS:
            _STATS[key] = 0


registry.on_reset(clear_pipeline_cache)  # a new registry: pipelines built from it again


def compress_array(
    config: Mapping[str, Any], array: np.ndarray, time_axis: int | None = None
) -> bytes:
    """One chunk's stream; with ``time_axis``, a series chunk (:mod:`.time_axis`): each step
    along that axis coded against the step before it."""
    pipeline, guard = cached_pipeline(config)
    with guard, _timed("encoded"):
        if time_axis is None or array.ndim == 0:
            return pipeline.compress(array)
        return series.encode(pipeline, array, series.resolve_axis(time_axis, array.ndim))


def _recorded_pipeline(
    header: Mapping[str, Any], config: Mapping[str, Any] | None, key: str | None = None
) -> tuple[Any, Guard]:
    """The cached pipeline a header records (``config``, the codec's, when it records none);
    for a stream whose every part is stored, the copying one (its prior is never run, so it is
    not built: a chunk of a language model's stored stream decodes without the model).
    ``key``: the header's stream key (:func:`cached_pipeline`'s ``given``), when the caller has
    it."""
    from lmgc_core.coding.pipeline import STORED, stored_only

    if stored_only(header):
        return STORED, nullcontext()
    if not isinstance(header.get("pipeline"), dict):  # the codec's own config: not keyed
        key = None
    hit = _given_hit(key) if key is not None else None  # no config built
    if hit is not None:
        return hit
    recorded = isinstance(header.get("pipeline"), dict)  # the chunk's config, not the codec's
    own = header_errors(header) if recorded else nullcontext()
    with registry.recorded(), own:  # left-out options mean what they meant when written
        return cached_pipeline(recorded_config(header, default=config or {}), key)


def _decode_series(
    config: Mapping[str, Any] | None, blob: bytes, head: tuple[dict[str, Any], int]
) -> np.ndarray:
    """A series chunk: every step with the pipeline its own stream records, against the step
    decoded before it."""

    def decode_step(
        stream: bytes, base: np.ndarray | None, max_nbytes: int, jobs: int
    ) -> np.ndarray:
        step_head = container.read_header(stream)
        pipeline, guard = _recorded_pipeline(step_head[0], config)
        with guard:
            if base is None:
                return pipeline.decompress(stream, max_nbytes=max_nbytes, head=step_head)
            return pipeline.decompress(stream, max_nbytes=max_nbytes, head=step_head, base=base)

    with _timed("decoded"):
        return series.decode(decode_step, blob, head)


def decompress_blob(
    config: Mapping[str, Any] | None,
    blob: bytes,
    expect_nbytes: int | None = None,
    head: tuple[dict[str, Any], int] | None = None,
    key: str | None = None,
) -> np.ndarray:
    """Decode ``blob`` with the pipeline recorded in its own header (as
    :func:`lmgc_core.decompress` does), cached per process. ``config`` (the codec's) is used only
    when the header records none. Decoding thus never depends on the defaults of the installed
    version: an array written with ``window: null`` decodes with the window it was written with.

    ``expect_nbytes``: the size of the buffer or chunk the caller will receive; a stream that
    declares another size is refused before a prior is built or anything allocated. ``head``
    and ``key``: :func:`~lmgc_core.coding.pipeline.read_keyed_header` of ``blob`` when the
    caller has it (a chunk's header is parsed once, its pipeline found by the key).
    """
    from lmgc_core.coding.declared import declared_array
    from lmgc_core.stream import container

    head = container.read_header(blob) if head is None else head
    header = head[0]
    if expect_nbytes is not None:
        dtype, shape = declared_array(header)
        nbytes = dtype.itemsize * int(np.prod(shape, dtype=object))
        if nbytes != expect_nbytes:
            raise StreamError(
                f"lmgc stream holds {dtype}{list(shape)} ({nbytes} bytes), the caller expects "
                f"{expect_nbytes} bytes"
            )
    if series.is_series(header):
        return _decode_series(config, blob, head)
    pipeline, guard = _recorded_pipeline(header, config, key)
    with guard, _timed("decoded"):
        return pipeline.decompress(blob, max_nbytes=expect_nbytes, head=head, _key=key)


@contextmanager
def codec_errors(action: str) -> Iterator[None]:
    """Whatever escapes a codec call is one of lmgc's errors (``ValueError`` subclasses, what
    numcodecs and Zarr users catch): a failure deep inside numpy, zlib or json on hostile input
    (``RecursionError``, a bare ``ValueError`` or ``TypeError``) becomes a
    :class:`StreamError` when decoding and a :class:`ConfigError` when encoding, with the
    original as its cause. Running out of memory and interrupts pass through unchanged."""
    try:
        yield
    except (LMGCError, MemoryError):
        raise
    except Exception as exc:
        kind = StreamError if action == "decode" else ConfigError
        raise kind(f"lmgc codec cannot {action} this input: {type(exc).__name__}: {exc}") from exc


# --------------------------------------------------------------------------------------------
# The numcodecs codec
# --------------------------------------------------------------------------------------------


@contextmanager
def stored_config_errors(config: Any) -> Iterator[None]:
    """Stored codec metadata the constructor does not take (an unknown key: metadata written by
    a newer lmgc; ``stages`` not a list) is a ConfigError naming it, not Python's TypeError,
    which also stopped the array from opening for reading."""
    try:
        yield
    except TypeError as exc:
        raise ConfigError(f"lmgc codec metadata {config!r:.200}: {exc}") from None


def _config_dtype(dtype: Any) -> str:
    """The codec's ``dtype`` option as the text its config stores, which must read back (a
    record dtype's text does not, ``"[('f0', '<f4')]"``: an array written with it could not be
    opened again) and must view raw bytes (items of 0 bytes cannot)."""
    dt = user_dtype(dtype, "lmgc codec: dtype")
    if dt.itemsize == 0:  # S0, V0: every raw encode divided by it
        raise ConfigError(f"lmgc codec: dtype {dtype!r} has items of 0 bytes; give a sized one")
    if dt.fields is not None or dt.subdtype is not None:
        raise ConfigError(
            f"lmgc codec: dtype {dtype!r} is a record or subarray type, which a codec config "
            "cannot hold; give a plain dtype (float32, int16, bfloat16, S8...)"
        )
    return str(dt)


class LMGC(Codec):
    """An lmgc pipeline as a numcodecs codec (``codec_id = "lmgc"``).

    Keyword arguments are the pipeline configuration (see :meth:`Pipeline.from_config`);
    ``dtype`` optionally fixes how raw (dtype-less) buffers are viewed. Components may be given as
    a name (``prior="adaptive"``) or as a mapping (``prior={"name": "adaptive"}``).
    """

    codec_id = "lmgc"

    def __init__(
        self,
        stages: list[Any] | None = None,
        serializer: Any = None,
        prior: Any = None,
        coder: Any = None,
        window: int | None = None,
        batch: int | None = None,
        dtype: str | None = None,
        level: int | None = None,
        time_axis: int | None = None,
    ) -> None:
        given = {
            "stages": stages,
            "serializer": serializer,
            "prior": prior,
            "coder": coder,
            "window": window,
            "batch": batch,
            "level": level,
        }
        self.pipeline_config = pin_level(canonical_config(given))
        # ml_dtypes' names resolve without an import first (a fresh reader of stored metadata)
        self.dtype = None if dtype is None else _config_dtype(dtype)
        self.time_axis = series.check_time_axis(time_axis)
        """Code each step along this axis of a chunk against the step before it (see
        :mod:`lmgc_core.coding.time_axis`); ``None``: every chunk as one array."""

    # numcodecs' Codec equality / repr use get_config
    def get_config(self) -> dict[str, Any]:
        # a copy all the way down: a caller editing it must not change this codec (its stages)
        config = {"id": self.codec_id, **copy.deepcopy(self.pipeline_config)}
        if self.dtype is not None:
            config["dtype"] = self.dtype
        if self.time_axis is not None:  # absent when off: configs written before stay equal
            config["time_axis"] = self.time_axis
        return config

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> LMGC:
        """The codec a stored config describes: one without ``level`` (written before the fast
        level became the default) keeps coding at the level it always meant (2)."""
        config = dict(config)
        config.pop("id", None)
        with registry.recorded(), stored_config_errors(config):
            return cls(**config)

    def __repr__(self) -> str:
        parts = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if k != "id")
        return f"LMGC({parts})"

    @property
    def pipeline(self) -> Any:
        """The (cached) :class:`~lmgc_core.coding.pipeline.Pipeline` this codec runs."""
        return cached_pipeline(self.pipeline_config)[0]

    def _as_array(self, buf: Any) -> np.ndarray:
        refuse_masked(buf)
        arr = ensure_ndarray(buf)
        if arr.dtype.hasobject:
            raise TypeError("lmgc codec: object arrays cannot be compressed")
        if not (arr.flags.c_contiguous or arr.flags.f_contiguous):
            arr = np.ascontiguousarray(arr)
        # ``dtype`` views raw buffers (bytes, memoryviews, byte arrays), never an array's own
        # dtype: a bfloat16 array is not re-read as float32
        raw = not isinstance(buf, np.ndarray) or buf.dtype == np.uint8
        if self.dtype is not None and raw and arr.dtype != np.dtype(self.dtype):
            flat = ensure_contiguous_ndarray(arr).reshape(-1).view(np.uint8)
            itemsize = np.dtype(self.dtype).itemsize
            if flat.size % itemsize:
                raise ConfigError(
                    f"lmgc codec: {flat.size} bytes is not a whole number of {self.dtype} items"
                )
            arr = flat.view(self.dtype)
        return arr

    def encode(self, buf: Any) -> bytes:
        arr = self._as_array(buf)  # TypeError for object arrays, as documented
        with codec_errors("encode"):
            # any fixed-size dtype: non-numbers go through an integer/byte view, noted in the header
            ndim = arr.ndim
            arr, note = coding_view(arr)
            axis = series.view_axis(self.time_axis, ndim, note)
            return with_view(compress_array(self.pipeline_config, arr, axis), note)

    def decode(self, buf: Any, out: Any = None) -> Any:
        """Decode ``buf``; with ``out``, a stream declaring another size than ``out`` is refused
        (:class:`StreamError`) before anything is decoded or allocated."""
        if out is not None and ensure_ndarray_like(out).dtype.hasobject:
            raise TypeError("lmgc codec: cannot decode into an object array")
        if out is not None and not ensure_ndarray_like(out).flags.writeable:
            raise ConfigError("lmgc codec: out= is read-only (bytes?): pass a writable buffer")
        with codec_errors("decode"):
            if not isinstance(buf, bytes):  # bytes cannot change under the decoder: no copy
                buf = ensure_contiguous_ndarray(buf).reshape(-1).view(np.uint8).tobytes()
            limit = None if out is None else ensure_ndarray_like(out).nbytes
            from lmgc_core.coding.pipeline import read_keyed_header

            head, key = read_keyed_header(buf)
            arr = restore(head[0], decompress_blob(self.pipeline_config, buf, limit, head, key))
            if out is not None:
                return ndarray_copy(arr, out)
            return arr


def restore_view_of(blob: bytes, arr: np.ndarray) -> np.ndarray:
    """The array ``blob`` stands for (undoing :func:`~lmgc_core.util.dtypes.coding_view`)."""
    from lmgc_core.coding.pipeline import read_header

    return restore(read_header(blob), arr)
