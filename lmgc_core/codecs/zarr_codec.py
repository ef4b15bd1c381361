"""Zarr v3 codec ``lmgc``: an lmgc pipeline as a zarr-python 3 *array-to-bytes* codec.

It is array-to-bytes (it takes the place of the ``bytes`` serializer) because the pipeline needs
the chunk's dtype and shape: stages quantize floats, the serializer lays out values, and the
stream header records both. In ``zarr.json`` it reads::

    {"name": "lmgc", "configuration": {"stages": [], "serializer": {"name": "hex"},
     "prior": {"name": "adaptive"}, "coder": {"name": "range"}, "window": 2048, "batch": null}}

The configuration is exactly :meth:`lmgc_core.coding.pipeline.Pipeline.from_config`'s. ``level``
selects the float prior's level; a new codec writes the one it codes at (1, fast, by default)
into the metadata, and metadata without one (written before the fast level was the default)
keeps meaning level 2. ``time_axis`` (an axis, or absent) codes each step along that axis of a
chunk against the step before it (:mod:`lmgc_core.coding.time_axis`). zarr-python finds the codec
through the ``zarr.codecs`` entry-point group (``lmgc =
"lmgc_core.codecs.zarr_codec:LMGCZarrCodec"``), so opening such an array needs lmgc installed,
nothing imported. Importing this module also registers the codec explicitly (for source checkouts).

Every chunk is one self-contained lmgc stream, so reading a chunk decodes that chunk only. Any
fixed-size dtype works (complex, datetime64/timedelta64, fixed bytes and unicode): non-numbers
are coded through a noted float/int/byte view (:func:`lmgc_core.util.dtypes.coding_view`).
Pipelines (and their priors) are built once per process and configuration
(:func:`lmgc_core.codecs.numcodecs_codec.cached_pipeline`), so Dask workers reuse a loaded prior.

Threads: zarr-python 3 awaits ``_encode_single`` / ``_decode_single`` for up to
``async.concurrency`` chunks at once (default 10); both hand the work to ``asyncio.to_thread``,
i.e. to zarr's thread pool (``threading.max_workers`` threads, default: asyncio's
``min(32, cores + 4)``), so chunks are coded at the same time. With a ``thread_safe`` prior no
lock is taken; another prior (an LM) is queued one chunk at a time by its pipeline's lock.
For Zarr v2-format arrays use the numcodecs codec :class:`lmgc_core.codecs.numcodecs_codec.LMGC` as
the
compressor instead. See ``docs/zarr.md``.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from zarr.abc.codec import ArrayBytesCodec
from zarr.core.buffer import Buffer, NDBuffer

from lmgc_core.codecs.numcodecs_codec import (
    canonical_config,
    codec_errors,
    compress_array,
    decompress_blob,
    pin_level,
    stored_config_errors,
)
from lmgc_core.coding import time_axis as series
from lmgc_core.components import registry
from lmgc_core.stream.notes import restore, with_view
from lmgc_core.util.dtypes import coding_view
from lmgc_core.util.errors import ConfigError, StreamError

CODEC_NAME = "lmgc"


def _native(dtype: Any) -> np.dtype:
    """numpy dtype of a zarr dtype object (zarr >= 3.1) or anything ``np.dtype`` takes."""
    native = dtype.to_native_dtype() if hasattr(dtype, "to_native_dtype") else dtype
    return np.dtype(native)


def _parse(data: Any) -> dict[str, Any]:
    if isinstance(data, str):
        if data != CODEC_NAME:
            raise ValueError(f"expected codec name {CODEC_NAME!r}, got {data!r}")
        return {}
    if not isinstance(data, dict) or data.get("name") != CODEC_NAME:
        raise ValueError(f"expected a {CODEC_NAME!r} codec description, got {data!r}")
    configuration = data.get("configuration") or {}
    if not isinstance(configuration, dict):
        raise ValueError(f"codec configuration must be a mapping, not {configuration!r}")
    return configuration


def _config_of_json(text: Any, keywords: dict[str, Any]) -> dict[str, Any]:
    """The configuration ``config_json`` holds; it is the whole of it, so the keywords that
    also describe one (``None``: not given) are refused beside it."""
    given = [k for k, v in keywords.items() if v is not None]
    if given:
        raise ConfigError(f"config_json is the whole configuration: give it or {given}, not both")
    try:
        config = json.loads(text) if isinstance(text, str | bytes) else None
    except (ValueError, RecursionError):
        config = None
    if not isinstance(config, dict):
        raise ConfigError(f"config_json must be a JSON object, not {str(text)[:60]!r}")
    return config


@dataclass(frozen=True)
class LMGCZarrCodec(ArrayBytesCodec):
    """``lmgc`` array-to-bytes codec; keyword arguments are the pipeline configuration."""

    config_json: str
    time_axis: int | None = None
    """Code each step along this axis of a chunk against the step before it (see
    :mod:`lmgc_core.coding.time_axis`); ``None``: every chunk as one array."""
    is_fixed_size = False

    def __init__(
        self,
        *,
        stages: list[Any] | None = None,
        serializer: Any = None,
        prior: Any = None,
        coder: Any = None,
        window: int | None = None,
        batch: int | None = None,
        level: int | None = None,
        time_axis: int | None = None,
        config_json: str | None = None,
    ) -> None:
        """``config_json``: instead of the keywords, the whole configuration as the field of
        that name holds it, which ``dataclasses.replace`` passes (zarr evolves codecs with it)."""
        given = {
            "stages": stages,
            "serializer": serializer,
            "prior": prior,
            "coder": coder,
            "window": window,
            "batch": batch,
            "level": level,
        }
        if config_json is not None:
            given = _config_of_json(config_json, given)
        config = pin_level(canonical_config(given))  # the level it codes at, said in the metadata
        # a JSON string keeps the frozen dataclass hashable and comparable
        object.__setattr__(self, "config_json", json.dumps(config, sort_keys=True))
        object.__setattr__(self, "time_axis", series.check_time_axis(time_axis))

    @property
    def pipeline_config(self) -> dict[str, Any]:
        return json.loads(self.config_json)

    @property
    def pipeline(self) -> Any:
        """The (process-wide cached) :class:`~lmgc_core.coding.pipeline.Pipeline` it runs."""
        from lmgc_core.codecs.numcodecs_codec import cached_pipeline

        return cached_pipeline(self.pipeline_config)[0]

    # -- metadata --------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LMGCZarrCodec:
        """The codec stored metadata describes: a configuration without ``level`` (written before
        the fast level became the default) keeps coding at the level it always meant (2)."""
        with registry.recorded(), stored_config_errors(data):
            return cls(**_parse(data))

    def to_dict(self) -> dict[str, Any]:
        configuration = self.pipeline_config
        if self.time_axis is not None:  # absent when off: metadata written before stays equal
            configuration["time_axis"] = self.time_axis
        return {"name": CODEC_NAME, "configuration": configuration}

    def validate(self, *, shape: Any, dtype: Any, chunk_grid: Any) -> None:
        if self.time_axis is not None:
            series.resolve_axis(self.time_axis, len(tuple(shape)))  # ConfigError if outside
            # a pipeline without delta coding could write no chunk: refused before zarr.json
            self.pipeline.check_deltas("time_axis")
        native = _native(dtype)
        if (
            native.hasobject
            or native.kind == "T"
            or (native.itemsize == 0 and native.kind in "SUV")
        ):
            raise ConfigError(
                f"the lmgc codec codes fixed-size dtypes (numbers, complex, datetime, fixed "
                f"bytes/unicode, records), not variable-size {native}"
            )

    def compute_encoded_size(self, input_byte_length: int, chunk_spec: Any) -> int:
        """Asked of a sharding index codec only (zarr allows one that cannot answer)."""
        raise NotImplementedError(
            "lmgc's output size depends on the data: it cannot be a sharding index codec "
            "(use it in the shard's codecs, and e.g. crc32c for the index)"
        )

    # -- coding: the sync bodies run on zarr's thread pool (zarr versions with SupportsSyncCodec
    # may also call them directly from their own threads) -----------------------------------
    def _encode_sync(self, chunk_array: NDBuffer, chunk_spec: Any) -> Buffer | None:
        with codec_errors("encode"):
            arr = np.asarray(chunk_array.as_numpy_array(), order="C")  # a 0-d chunk stays 0-d
            arr = _in_byte_order(arr, _native(chunk_spec.dtype))
            ndim = arr.ndim
            # non-numbers (complex, datetime, |S, <U, records) go through a noted integer view
            arr, note = coding_view(arr)
            axis = series.view_axis(self.time_axis, ndim, note)
            blob = with_view(compress_array(self.pipeline_config, arr, axis), note)
        return chunk_spec.prototype.buffer.from_bytes(blob)

    def _decode_sync(self, chunk_bytes: Buffer, chunk_spec: Any) -> NDBuffer:
        """Decode one chunk; a stream declaring another size than the chunk's (a replaced
        chunk file) is refused before anything is decoded or allocated."""
        want = _native(chunk_spec.dtype)
        nbytes = want.itemsize * int(np.prod(tuple(chunk_spec.shape), dtype=object))
        with codec_errors("decode"):
            blob = chunk_bytes.to_bytes()
            from lmgc_core.coding.pipeline import read_keyed_header

            head, key = read_keyed_header(blob)  # verified and parsed once per chunk
            arr = restore(head[0], decompress_blob(self.pipeline_config, blob, nbytes, head, key))
            arr = _in_byte_order(arr, want)  # chunks written before the encoder converted
        if arr.shape != tuple(chunk_spec.shape) or arr.dtype != want:
            raise StreamError(
                f"lmgc chunk holds {arr.dtype}{list(arr.shape)}, the array expects "
                f"{want}{list(chunk_spec.shape)}"
            )
        return chunk_spec.prototype.nd_buffer.from_numpy_array(arr)

    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec: Any) -> Buffer | None:
        # off the event loop: concurrent chunks overlap instead of queueing on the loop thread
        return await asyncio.to_thread(self._encode_sync, chunk_array, chunk_spec)

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec: Any) -> NDBuffer:
        return await asyncio.to_thread(self._decode_sync, chunk_bytes, chunk_spec)


def _in_byte_order(arr: np.ndarray, want: np.dtype) -> np.ndarray:
    """``arr`` in ``want``'s byte order where only that differs: Zarr hands a big-endian
    value assigned to a whole chunk over as it is, and the array's metadata (with no ``bytes``
    codec) keeps no byte order, so such chunks were written and then refused on every read."""
    if arr.dtype == want or arr.dtype.newbyteorder("=") != want.newbyteorder("="):
        return arr
    return arr.astype(want)


def _register() -> None:
    from zarr.registry import register_codec

    register_codec(CODEC_NAME, LMGCZarrCodec)


_register()
