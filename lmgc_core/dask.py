"""Compress big gradient archives into Zarr on a Dask cluster.

Each chunk becomes one independent lmgc stream, so chunks compress in parallel on the workers
of a :mod:`dask.distributed` cluster. Every worker process builds a pipeline (and so loads its
prior, e.g. an LM) once per configuration and reuses it for all its chunks
(:func:`lmgc_core.numcodecs_codec.cached_pipeline`); :func:`worker_stats` reads the counters back.

    >>> from dask.distributed import Client
    >>> client = Client("tcp://scheduler:8786")                 # or LocalCluster()
    >>> to_zarr(grads, "grads.zarr", {"prior": {"name": "adaptive"}}, chunks=(1, 65536))
    >>> worker_stats(client)          # {worker address: {"builds": 1, "encoded": ..., ...}}

See ``docs/zarr.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .numcodecs_codec import LMGC, cached_pipeline, canonical_config, pipeline_cache_info

__all__ = ["codec_kwargs", "to_zarr", "warm_workers", "worker_stats"]


def codec_kwargs(config: Mapping[str, Any] | None = None, zarr_format: int = 3) -> dict[str, Any]:
    """The ``create_array`` keyword arguments that make Zarr compress with ``config``:
    ``serializer=LMGCZarrCodec`` for Zarr v3, ``compressors=LMGC`` (numcodecs) for Zarr v2."""
    config = dict(config or {})
    if zarr_format == 3:
        from .zarr_codec import LMGCZarrCodec

        return {"serializer": LMGCZarrCodec(**config), "compressors": None, "filters": None}
    if zarr_format == 2:
        return {"compressors": LMGC(**config), "filters": None, "zarr_format": 2}
    raise ValueError(f"zarr_format must be 2 or 3, not {zarr_format!r}")


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
    **zarr_kwargs: Any,
) -> Any:
    """Write ``array`` (NumPy or Dask) to the Zarr store ``url`` with the lmgc codec.

    ``chunks`` rechunks (Dask) or chunks (NumPy) the array first; one Zarr chunk = one Dask
    block = one lmgc stream. Runs on the current Dask scheduler (a ``distributed.Client`` when
    one is active). Other keyword arguments go to ``Group.create_array``.
    """
    import dask.array as da

    if isinstance(array, da.Array):
        darr = array.rechunk(chunks) if chunks is not None else array
    else:
        darr = da.from_array(array, chunks=chunks if chunks is not None else "auto")
    kwargs = {**codec_kwargs(config, zarr_format), **zarr_kwargs}
    return da.to_zarr(darr, url, component=component, mode=mode, compute=compute, **kwargs)


def _warm(config: Mapping[str, Any]) -> dict[str, Any]:
    cached_pipeline(config)
    return pipeline_cache_info()


def warm_workers(client: Any, config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Build (load) the pipeline on every worker up front, e.g. to pay an LM's load time before
    the chunks arrive. Returns :func:`worker_stats`-style counters."""
    return client.run(_warm, canonical_config(dict(config or {})))


def worker_stats(client: Any) -> dict[str, dict[str, Any]]:
    """``{worker address: pipeline_cache_info()}``: per-process build/reuse/chunk counters."""
    return client.run(pipeline_cache_info)
