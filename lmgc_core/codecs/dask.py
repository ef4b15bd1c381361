"""Compress big gradient archives into Zarr on a Dask cluster.

Each chunk becomes one independent lmgc stream, so chunks compress in parallel on the workers
of a :mod:`dask.distributed` cluster: :func:`to_zarr` writes chunk-aligned blocks with no store
lock, so workers code at the same time. Every worker process builds a pipeline (and so loads its
prior, e.g. an LM) once per configuration and reuses it for all its chunks
(:func:`lmgc_core.codecs.numcodecs_codec.cached_pipeline`); :func:`worker_stats` reads the counters
back and :func:`worker_intervals` when each chunk was coded.

    >>> client = connect("tcp://scheduler:8786")   # or connect(n_workers=2): a LocalCluster
    >>> to_zarr(grads, "grads.zarr", {"prior": {"name": "adaptive"}}, chunks=(1, 65536))
    >>> worker_stats(client)          # {worker address: {"builds": 1, "encoded": ..., ...}}

See ``docs/zarr.md``.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import numpy as np

from lmgc_core.codecs.numcodecs_codec import (
    LMGC,
    cached_pipeline,
    canonical_config,
    chunk_intervals,
    pin_level,
    pipeline_cache_info,
)
from lmgc_core.util.dtypes import refuse_masked
from lmgc_core.util.errors import ConfigError

__all__ = [
    "codec_kwargs",
    "connect",
    "to_zarr",
    "warm_workers",
    "worker_intervals",
    "worker_stats",
]


def codec_kwargs(config: Mapping[str, Any] | None = None, zarr_format: int = 3) -> dict[str, Any]:
    """The ``create_array`` keyword arguments that make Zarr compress with ``config``:
    ``serializer=LMGCZarrCodec`` for Zarr v3, ``compressors=LMGC`` (numcodecs) for Zarr v2."""
    config = dict(config or {})
    if zarr_format == 3:
        from lmgc_core.codecs.zarr_codec import LMGCZarrCodec

        codec: Any = _made(LMGCZarrCodec, config)
        return {"serializer": codec, "compressors": None, "filters": None}
    if zarr_format == 2:
        return {"compressors": _made(LMGC, config), "filters": None, "zarr_format": 2}
    raise ValueError(f"zarr_format must be 2 or 3, not {zarr_format!r}")


def _made(cls: Any, config: dict[str, Any]) -> Any:
    """The codec ``cls(**config)`` with its pipeline built (a bad option refused here, before a
    store is touched, not at the first chunk's encode); an unknown key is a ConfigError."""
    try:
        codec = cls(**config)
    except TypeError:
        known = sorted(inspect.signature(cls.__init__).parameters.keys() - {"self"})
        unknown = sorted(set(config) - set(known))
        if not unknown:
            raise
        raise ConfigError(
            f"unknown lmgc codec keys {unknown} for {cls.__name__} (it takes {known})"
        ) from None
    pipeline = codec.pipeline  # built (and cached) now: a ConfigError before any write
    if codec.time_axis is not None:  # its chunks code steps against steps: deltas
        pipeline.check_deltas("time_axis")
    return codec


def connect(
    address: str | None = None,
    *,
    n_workers: int | None = None,
    threads_per_worker: int = 1,
    processes: bool = True,
    **cluster_kwargs: Any,
) -> Any:
    """A ``distributed.Client``: to the scheduler at ``address`` (``"tcp://host:8786"``, workers
    started there with ``dask worker``), or, without an address, to a new ``LocalCluster`` of
    ``n_workers`` processes x ``threads_per_worker`` threads owned by the client (closing the
    client stops it). One thread per worker suits LM priors (their model serializes); a
    ``thread_safe`` prior can also use more threads per worker."""
    from distributed import Client

    if address is not None:
        return Client(address)
    cluster_kwargs.setdefault("dashboard_address", None)
    return Client(
        n_workers=n_workers,
        threads_per_worker=threads_per_worker,
        processes=processes,
        **cluster_kwargs,
    )


def to_zarr(
    array: Any,
    url: Any,
    config: Mapping[str, Any] | None = None,
    *,
    chunks: Any = None,
    zarr_format: int = 3,
    component: str | None = None,
    mode: str = "w",
    compute: bool = True,
    lock: Any = False,
    storage_options: dict[str, Any] | None = None,
    zarr_config: Mapping[str, Any] | None = None,
    **zarr_kwargs: Any,
) -> Any:
    """Write ``array`` (NumPy or Dask) to the Zarr store ``url`` with the lmgc codec.

    ``chunks`` rechunks (Dask) or chunks (NumPy) the array first; one Zarr chunk = one Dask
    block = one lmgc stream. The array is created here (``mode="w"`` replaces an existing one,
    ``"w-"`` refuses to), then every block writes its own chunks with no lock: chunk-aligned
    writes touch disjoint keys, so the workers code and store at the same time (Dask's own
    ``to_zarr(mode="w")`` would take a cluster-wide lock around each chunk, i.e. around the
    coding). ``lock=True`` restores that lock. Runs on the current Dask scheduler (a
    ``distributed.Client`` when one is active). Other keyword arguments go to
    ``zarr.create_array``, and ``zarr_config`` is its ``config`` (``config`` is lmgc's):
    ``write_empty_chunks`` is true unless it says otherwise, since Zarr otherwise drops a chunk
    equal to the fill value by ``==``, so a chunk of -0.0 (fill 0) or of NaNs with another
    payload (fill NaN) came back as the fill value's bits; ``compute=False`` returns the Dask
    graph of the writes.
    """
    import dask.array as da
    import zarr
    from zarr.storage import ZipStore

    _refuse_masked(array, da)
    shards = zarr_kwargs.get("shards")
    for name, sizes in (("chunks", chunks), ("shards", shards)):
        if isinstance(sizes, tuple | list) and any(
            not isinstance(n, int) or isinstance(n, bool) or n < 1 for n in sizes
        ):
            raise ValueError(f"{name} must be positive integers, not {sizes!r}")
    inner = None  # with shards=, chunks= is the Zarr chunk inside a shard-sized Dask block
    if isinstance(shards, tuple | list) and isinstance(chunks, tuple | list) and not lock:
        inner, chunks = tuple(chunks), tuple(shards)
    if isinstance(array, da.Array):
        darr = array.rechunk(chunks) if chunks is not None else array
    else:
        darr = da.from_array(array, chunks=chunks if chunks is not None else "auto")
    if any(len(set(c[:-1])) > 1 or (len(c) > 1 and c[-1] > c[0]) for c in darr.chunks):
        darr = darr.rechunk(tuple(max(c) for c in darr.chunks))  # regular, as Zarr needs
    if mode not in ("w", "w-"):
        raise ValueError(f"mode must be 'w' (overwrite) or 'w-' (create), not {mode!r}")
    if taken := sorted(OWN_KEYS & zarr_kwargs.keys()):
        raise TypeError(
            f"to_zarr sets {taken} itself (from the array and lmgc's codec): rechunk or cast "
            "the array instead, and give lmgc's configuration as config"
        )
    if isinstance(url, ZipStore):
        raise ValueError(
            "to_zarr cannot write a ZipStore: Dask's store() writes through copies of the "
            "store that each rewrite the zip, which then cannot be read; write a folder (a path "
            "or LocalStore) and zip it, or write the ZipStore with zarr itself (docs/zarr.md)"
        )
    kwargs = {
        **codec_kwargs(config, zarr_format),
        "shape": darr.shape,
        "chunks": inner or tuple(max(c[0], 1) for c in darr.chunks),
        "dtype": darr.dtype,
        "config": {"write_empty_chunks": True, **(zarr_config or {})},
        **zarr_kwargs,
    }
    if isinstance(shards, tuple | list):  # refused before an existing array is replaced
        _check_aligned(darr, tuple(shards), darr.shape, lock)
    z = zarr.create_array(
        url, name=component, overwrite=mode == "w", storage_options=storage_options, **kwargs
    )
    _check_aligned(darr, z.shards or z.chunks, z.shape, lock)
    return darr.store(z, lock=lock, compute=compute)


OWN_KEYS = frozenset({"shape", "dtype", "serializer", "compressors", "filters", "zarr_format",
                      "name", "overwrite"})  # fmt: skip
"""``create_array`` arguments :func:`to_zarr` derives itself: given again, they would replace
the array's shape or dtype (a corner of it stored, or its values cast) or lmgc's codec."""


def _refuse_masked(array: Any, da: Any) -> None:
    """A masked array's mask would be lost (Zarr hands the codec the bare values, so the
    codec's own refusal never sees it): refused as ``Pipeline.compress`` refuses it. A Dask
    array of masked blocks is refused whole: whether a value is masked is known only once
    computed."""
    if isinstance(array, da.Array):
        if np.ma.isMaskedArray(getattr(array, "_meta", None)):
            raise ConfigError(
                "a Dask array of masked blocks: lmgc codes values, not masks, so the mask "
                "would be lost; write array.map_blocks(np.ma.filled) (or the data) and the "
                "mask (da.ma.getmaskarray) apart"
            )
        return
    refuse_masked(array)


def _check_aligned(darr: Any, unit: tuple[int, ...], shape: Any, lock: Any) -> None:
    """Without a lock, two Dask blocks must never write into one chunk or shard."""
    if lock is False and not _aligned(darr.chunks, unit, shape):
        raise ValueError(
            f"Dask blocks {darr.chunksize} do not cover whole Zarr chunks/shards "
            f"{unit}: rechunk to a multiple of them, or pass lock=True"
        )


def _aligned(blocks: tuple[tuple[int, ...], ...], unit: tuple[int, ...], shape: Any) -> bool:
    """Every block boundary falls on a write-unit (chunk or shard) boundary or the array end."""
    for sizes, step, extent in zip(blocks, unit, shape, strict=True):
        edge = 0
        for size in sizes:
            edge += size
            if edge % step and edge != extent:
                return False
    return True


def _warm(config: Mapping[str, Any]) -> dict[str, Any]:
    cached_pipeline(config)
    return pipeline_cache_info()


def warm_workers(client: Any, config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Build (load) the pipeline on every worker up front, e.g. to pay an LM's load time before
    the chunks arrive. Returns :func:`worker_stats`-style counters."""
    # the config the codecs run (a float level written in), so the chunks find this pipeline;
    # time_axis and dtype (how the numcodecs codec views raw bytes) are the codec's
    pipeline = {k: v for k, v in (config or {}).items() if k not in ("time_axis", "dtype")}
    return client.run(_warm, pin_level(canonical_config(pipeline)))


def worker_stats(client: Any) -> dict[str, dict[str, Any]]:
    """``{worker address: pipeline_cache_info()}``: per-process build/reuse/chunk counters."""
    return client.run(pipeline_cache_info)


def worker_intervals(client: Any) -> dict[str, list[tuple[str, float, float, int]]]:
    """``{worker address: chunk_intervals()}``: when each worker coded each chunk (wall clock),
    to check that workers really coded at the same time; kept only where the worker's codec
    logger is at DEBUG (see :func:`chunk_intervals`)."""
    return client.run(chunk_intervals)
