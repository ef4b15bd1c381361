"""Compressing a gradient archive into Zarr on a real ``dask.distributed`` cluster (two worker
processes): the store reads back bit-exact, each worker built its prior exactly once, and the two
workers coded chunks at the same time (their recorded chunk intervals overlap)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("zarr")
da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

from lmgc_core.codecs.dask import (  # noqa: E402
    connect,
    to_zarr,
    warm_workers,
    worker_intervals,
    worker_stats,
)
from tests.paths import TESTS_DIR  # noqa: E402

DATA = TESTS_DIR / "data"
CONFIG = {"prior": {"name": "adaptive"}, "window": 512}


@pytest.fixture(scope="module")
def client():
    """A real LocalCluster of 2 worker processes x 1 thread, owned by the client."""
    with connect(n_workers=2, threads_per_worker=1, worker_dashboard_address=None) as c:
        assert len(c.scheduler_info()["workers"]) == 2
        yield c


@pytest.fixture(scope="module")
def archive() -> np.ndarray:
    """Real gradients: 7 snapshots x 4,096 values, tiled to 14 rows (28 chunks of 2,048)."""
    g = np.load(DATA / "mlp_digits_grads_slice.npy")
    return np.concatenate([g, -g[::-1]])


@pytest.mark.slow
@pytest.mark.parametrize("zarr_format", [3, 2])
def test_to_zarr_on_a_cluster_builds_the_prior_once_per_worker(
    client, archive, tmp_path, zarr_format
):
    import zarr

    client.run(_reset)
    path = str(tmp_path / f"grads_v{zarr_format}.zarr")
    darr = da.from_array(archive, chunks=(1, 2048))
    to_zarr(darr, path, CONFIG, zarr_format=zarr_format)

    stats = worker_stats(client)  # read from each worker process, not guessed
    assert len(stats) == 2
    assert len({s["pid"] for s in stats.values()}) == 2
    n_chunks = darr.npartitions
    assert sum(s["encoded"] for s in stats.values()) == n_chunks
    for s in stats.values():
        assert s["encoded"] > 0, stats  # both workers did work...
        assert s["builds"] == 1, stats  # ...and each built its pipeline/prior once
        assert s["hits"] == s["encoded"] - 1, stats

    # read back here (another process than the writers), bit for bit
    back = zarr.open_array(path, mode="r")[:]
    assert back.dtype == archive.dtype and back.tobytes() == archive.tobytes()
    # and decode on the cluster too
    again = da.from_zarr(path).compute()
    assert again.tobytes() == archive.tobytes()
    stats = worker_stats(client)  # decoding found the pipeline the worker had built to encode
    assert sum(s["decoded"] for s in stats.values()) == n_chunks
    assert all(s["builds"] == 1 for s in stats.values()), stats


@pytest.mark.slow
@pytest.mark.parametrize("config", [CONFIG, {"prior": "float"}], ids=["adaptive", "float"])
def test_warm_workers_loads_before_the_chunks_arrive(client, tmp_path, config):
    """The float prior's codec writes its default level into its config: warming builds that
    very pipeline, not a second one."""
    client.run(_reset)
    stats = warm_workers(client, config)
    assert all(s["builds"] == 1 and s["encoded"] == 0 for s in stats.values())
    x = np.linspace(-1, 1, 8192, dtype=np.float32).reshape(4, 2048)
    to_zarr(x, str(tmp_path / "w.zarr"), config, chunks=(1, 2048))
    stats = worker_stats(client)
    assert all(s["builds"] == 1 for s in stats.values()), stats
    assert sum(s["encoded"] for s in stats.values()) == 4


def _cross_worker_overlaps(client) -> tuple[int, list[int]]:
    """How many (worker A chunk, worker B chunk) pairs were being coded at the same instant,
    and how many chunks each worker coded."""
    logs = [
        [(s, e) for op, s, e, _ in log if op == "encoded"]
        for log in worker_intervals(client).values()
    ]
    assert len(logs) == 2
    a, b = logs
    return sum(s1 < e2 and s2 < e1 for s1, e1 in a for s2, e2 in b), [len(a), len(b)]


@pytest.mark.slow
def test_workers_code_chunks_at_the_same_time_without_a_store_lock(client, archive, tmp_path):
    import zarr

    darr = da.from_array(archive, chunks=(1, 2048))
    client.run(_reset)
    warm_workers(client, CONFIG)
    to_zarr(darr, str(tmp_path / "free.zarr"), CONFIG)
    overlaps, counts = _cross_worker_overlaps(client)
    assert all(counts) and sum(counts) == darr.npartitions, counts
    assert overlaps > 0  # both workers were inside the codec at once
    back = zarr.open_array(str(tmp_path / "free.zarr"), mode="r")[:]
    assert back.tobytes() == archive.tobytes()

    # the control: Dask's store lock (what dask.array.to_zarr(mode="w") takes) serializes them
    client.run(_reset)
    to_zarr(darr, str(tmp_path / "locked.zarr"), CONFIG, lock=True)
    overlaps, counts = _cross_worker_overlaps(client)
    assert sum(counts) == darr.npartitions and overlaps == 0, counts


def test_to_zarr_modes_and_alignment(archive, tmp_path):
    import zarr

    path = str(tmp_path / "m.zarr")
    to_zarr(archive, path, CONFIG, chunks=(2, 2048))
    with pytest.raises(ValueError, match="exists"):
        to_zarr(archive, path, CONFIG, chunks=(2, 2048), mode="w-")
    with pytest.raises(ValueError, match="mode"):
        to_zarr(archive, path, CONFIG, mode="a")
    # with shards=, chunks= is the chunk inside a shard and the Dask blocks are shard-sized
    # (every block was one chunk, so more than one chunk per shard was refused)
    to_zarr(archive, path, CONFIG, chunks=(1, 2048), shards=(2, 2048))
    z = zarr.open_array(path, mode="r")
    assert z.chunks == (1, 2048) and z.shards == (2, 2048)
    assert z[:].tobytes() == archive.tobytes()
    # Dask blocks that split a shard would race on it: refused unless a lock is asked for
    with pytest.raises(ValueError, match="whole Zarr chunks"):
        to_zarr(da.from_array(archive, chunks=(1, 2048)), path, CONFIG, shards=(2, 2048))
    # refused before the array there was replaced (it had read back as zeros)
    assert zarr.open_array(path, mode="r")[:].tobytes() == archive.tobytes()
    to_zarr(archive, path, CONFIG, chunks=(1, 2048), shards=(2, 2048), lock=True)
    assert zarr.open_array(path, mode="r")[:].tobytes() == archive.tobytes()
    to_zarr(archive, path, CONFIG, chunks=(2, 2048), shards=(2, 2048))
    assert zarr.open_array(path, mode="r")[:].tobytes() == archive.tobytes()


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_to_zarr_keeps_chunks_equal_to_the_fill_value_bit_for_bit(tmp_path, zarr_format):
    """Zarr drops a chunk equal to the fill value by ``==``: a chunk of NaNs with another
    payload (fill NaN) came back as the fill's NaN, and before zarr 3.1.2 a chunk of -0.0 as
    +0.0, silently; and ``to_zarr(config=...)`` could not reach zarr's own ``config``."""
    import zarr

    x = np.zeros((4, 64), np.float32)
    x[0] = np.frombuffer(np.uint32(0x7FC00001).tobytes() * 64, np.float32)
    x[1] = -0.0
    for fill in (float("nan"), 0.0):
        path = str(tmp_path / f"f{fill}.zarr")
        to_zarr(x, path, {"level": 1}, chunks=(1, 64), zarr_format=zarr_format, fill_value=fill)
        assert zarr.open_array(path, mode="r")[:].tobytes() == x.tobytes()
    to_zarr(x, path, chunks=(1, 64), zarr_format=zarr_format, zarr_config={"order": "C"})


def _reset() -> None:
    """A worker's pipeline cache emptied, and its chunk intervals kept (their logger at DEBUG)."""
    import logging

    from lmgc_core.codecs.numcodecs_codec import clear_pipeline_cache

    logging.getLogger("lmgc_core.codecs.numcodecs_codec").setLevel(logging.DEBUG)
    clear_pipeline_cache()


@pytest.mark.parametrize(
    "config",
    [{"level": 5}, {"prior": "no_such_prior"}, {"stages": [{"name": "quantize", "bits": 0}]},
     {"no_such_key": 1}],
)  # fmt: skip
def test_a_bad_config_is_refused_before_the_store_is_touched(tmp_path, config):
    from lmgc_core.util.errors import LMGCError

    old = np.arange(6, dtype=np.float32)
    to_zarr(old, tmp_path / "a.zarr", None, chunks=(3,))
    with pytest.raises(LMGCError):
        to_zarr(np.ones(6, np.float32), tmp_path / "a.zarr", config, chunks=(3,))
    import zarr

    assert zarr.open_array(tmp_path / "a.zarr")[:].tobytes() == old.tobytes()  # not replaced


@pytest.mark.parametrize(
    "extra",
    [{"shape": (4, 4)}, {"dtype": "float16"}, {"compressors": None}, {"serializer": "auto"}],
)
def test_to_zarr_refuses_arguments_that_would_replace_its_own(tmp_path, extra):
    x = np.random.default_rng(0).standard_normal((8, 10)).astype(np.float32)
    with pytest.raises(TypeError, match="to_zarr sets"):
        to_zarr(x, tmp_path / "b.zarr", None, chunks=(4, 10), **extra)
    assert not (tmp_path / "b.zarr").exists()


def test_to_zarr_refuses_a_zip_store(tmp_path):
    from zarr.storage import ZipStore

    store = ZipStore(tmp_path / "c.zip", mode="w")
    with pytest.raises(ValueError, match="cannot write a ZipStore"):
        to_zarr(np.ones((4, 6), np.float32), store, None, chunks=(2, 6))


def test_to_zarr_refuses_what_it_would_lose_before_a_store_is_touched(archive, tmp_path):
    """A masked array (Zarr hands the codec bare values: the mask was dropped, exit 0), a
    ``time_axis`` with a pipeline that cannot code deltas (the existing array was replaced by
    one no chunk could be written to), zero-sized chunks or shards (a bare ZeroDivisionError):
    each refused while the array already there stays as it was."""
    import zarr

    from lmgc_core.util.errors import ConfigError

    path = str(tmp_path / "kept.zarr")
    x = archive[:2]
    to_zarr(x, path, CONFIG, chunks=(1, 2048))
    masked = np.ma.masked_array(x, mask=np.arange(x.size).reshape(x.shape) % 7 == 0)
    with pytest.raises(ConfigError, match="mask would be lost"):
        to_zarr(masked, path, CONFIG, chunks=(1, 2048))
    with pytest.raises(ConfigError, match="mask would be lost"):
        to_zarr(da.ma.masked_array(da.from_array(x), mask=masked.mask), path, CONFIG)
    for config in ({"prior": "adaptive", "time_axis": 0},
                   {"stages": [{"name": "quantize", "bits": 8}], "time_axis": 0}):  # fmt: skip
        with pytest.raises(ConfigError, match="time_axis"):
            to_zarr(x, path, config, chunks=(2, 2048))
    with pytest.raises(ValueError, match="shards must be positive integers"):
        to_zarr(x, path, CONFIG, chunks=(1, 2048), shards=(0, 2048))
    with pytest.raises(ValueError, match="chunks must be positive integers"):
        to_zarr(x, path, CONFIG, chunks=(1, 0), shards=(2, 2048))
    assert zarr.open_array(path, mode="r")[:].tobytes() == x.tobytes()
    # a mask with nothing masked loses nothing: written as the plain array is
    to_zarr(np.ma.masked_array(x), path, CONFIG, chunks=(1, 2048))
    assert zarr.open_array(path, mode="r")[:].tobytes() == x.tobytes()
