"""Concurrency that is real, not just allowed: a thread-safe prior's blocks and Zarr chunks are
coded at overlapping times (their wall-clock intervals, recorded while coding, overlap), a prior
that must serialize is never run twice at once, and the bytes never depend on the thread count.
No timing thresholds: speed-ups are measured by ``benchmarks/parallel.py``."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lmgc_core.coding.pipeline import Pipeline, decompress
from lmgc_core.components.interfaces import Decoder, Encoder, EntropyCoder
from lmgc_core.util.parallel import map_ordered, resolve_jobs, round_jobs, run_ahead, split_jobs
from tests.conftest import same_bits
from tests.paths import TESTS_DIR

LMGC = shutil.which("lmgc") or str(Path(sys.executable).parent / "lmgc")
# 8 windows of 56 floats per batch: the 8,192 real gradients make 19 independent blocks
SMALL_BATCHES = {"prior": {"name": "adaptive"}, "window": 512, "batch": 8}


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The largest number of intervals open at one instant (touching ends do not overlap)."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    open_now = peak = 0
    for _, step in events:
        open_now += step
        peak = max(peak, open_now)
    return peak


class RecordingCoder(EntropyCoder):
    """Wraps the real range coder and records, per block, when coding it started and ended."""

    name = "range"

    def __init__(self, inner: EntropyCoder) -> None:
        self.inner = inner
        self.intervals: list[tuple[float, float]] = []
        self._lock = threading.Lock()

    def get_config(self) -> dict:
        return self.inner.get_config()

    def _done(self, start: float) -> None:
        with self._lock:
            self.intervals.append((start, time.perf_counter()))

    def encoder(self) -> Encoder:
        coder, inner, start = self, self.inner.encoder(), time.perf_counter()

        class Timed(Encoder):
            def encode(self, symbols: np.ndarray, probs: np.ndarray) -> None:
                inner.encode(symbols, probs)

            def finish(self) -> bytes:
                out = inner.finish()
                coder._done(start)
                return out

        return Timed()

    def decoder(self, data: bytes) -> Decoder:
        return self.inner.decoder(data)


# -- the helpers ------------------------------------------------------------------------------


def test_map_ordered_keeps_input_order_and_uses_threads():
    seen: set[int] = set()

    def slow_square(x: int) -> int:
        seen.add(threading.get_ident())
        time.sleep(0.01 * (5 - x % 5))  # later items finish first
        return x * x

    assert map_ordered(slow_square, range(10), jobs=4) == [x * x for x in range(10)]
    assert len(seen) > 1
    assert map_ordered(slow_square, [], jobs=4) == []


def test_map_ordered_raises_the_first_failure_in_input_order_and_takes_no_more_items():
    """Item 0 fails after item 20 has (later in time, earlier in order; two workers start at
    0 and 20): its exception is the one raised, as ``map`` raises it; once an item failed, no
    further item is started."""
    started: list[int] = []
    first_started, later_failing = threading.Event(), threading.Event()

    def fail_some(x: int) -> int:
        started.append(x)
        if x == 0:
            first_started.set()
            later_failing.wait(10)
            time.sleep(0.01)
            raise ValueError("item 0")
        if x == 20:
            first_started.wait(10)
            later_failing.set()
            raise KeyError("item 20")
        time.sleep(0.01)
        return x

    with pytest.raises(ValueError, match="item 0"):
        map_ordered(fail_some, range(40), jobs=2)
    assert {0, 20} <= set(started) and len(started) < 40


def test_map_ordered_raises_the_first_failing_item_whatever_the_timing():
    """Item 25 fails while the first worker is still on item 1; item 2 fails too: item 2's
    exception is raised, not whichever came first in time (a damaged stream decoded on two
    threads named block 5 or block 2 by turns)."""
    later = threading.Event()

    def fail_some(x: int) -> int:
        if x == 25:
            later.set()
            raise KeyError("item 25")
        if x == 1:
            later.wait(10)
        if x == 2:
            raise ValueError("item 2")
        return x

    with pytest.raises(ValueError, match="item 2"):
        map_ordered(fail_some, range(40), jobs=2)


def test_items_are_shared_out_in_contiguous_ranges_then_taken_from_the_fullest():
    """Each worker takes its own range front to back (neighbouring items write neighbouring
    memory), then the last item of the range with the most left; every index exactly once."""
    from lmgc_core.util.parallel import _Ranges

    ranges = _Ranges(10, 3)  # 0-2, 3-5, 6-9
    assert [ranges.take(1) for _ in range(3)] == [3, 4, 5]
    assert ranges.take(1) == 9  # its own is done: the back of the fullest (6-9)
    assert [ranges.take(0) for _ in range(3)] == [0, 1, 2]
    rest = [ranges.take(2) for _ in range(3)]
    assert rest == [6, 7, 8] and ranges.take(0) is None and ranges.take(2) is None


def test_run_ahead_overlaps_work_with_the_callers_handling():
    """Results in input order; ``fn`` runs on other threads while the caller handles the
    previous result (writes it), two at a time with ``workers=2``; one core: a plain map."""
    spans: list[tuple[float, float]] = []
    handled: list[tuple[float, float]] = []
    threads: set[int] = set()

    def work(x: int) -> int:
        start = time.perf_counter()
        threads.add(threading.get_ident())
        time.sleep(0.02 * (1 + x % 3))
        spans.append((start, time.perf_counter()))
        return -x

    out = []
    for y in run_ahead(work, range(8), jobs=2, workers=2):
        start = time.perf_counter()
        time.sleep(0.02)  # "write" the result
        handled.append((start, time.perf_counter()))
        out.append(y)
    assert out == [-x for x in range(8)]
    assert threading.get_ident() not in threads
    assert max_overlap(spans) == 2  # two items at a time
    assert max_overlap(spans + handled) >= 2  # the handling overlaps the work

    threads.clear()
    assert list(run_ahead(work, range(4), jobs=1, workers=2)) == [0, -1, -2, -3]
    assert threads == {threading.get_ident()}


def test_run_ahead_reports_an_error_and_stops():
    started: list[int] = []

    def work(x: int) -> int:
        started.append(x)
        if x == 2:
            raise ValueError("bad item")
        return x

    with pytest.raises(ValueError, match="bad item"):
        list(run_ahead(work, range(100), jobs=2))
    assert len(started) < 10  # the items after the error were not all run


def test_jobs_resolution_and_split():
    assert resolve_jobs(None) == resolve_jobs(0) >= 1
    assert resolve_jobs(3) == 3
    assert resolve_jobs(np.int64(3)) == 3 and type(resolve_jobs(np.int64(3))) is int
    for bad in (-1, False, True, 2.0, "2"):  # False was 0 (all cores), True refused
        with pytest.raises(ValueError):
            resolve_jobs(bad)
    assert split_jobs(8, 3, concurrent=True) == (3, 2)
    assert split_jobs(8, 1, concurrent=True) == (1, 8)
    assert split_jobs(2, 10, concurrent=True) == (2, 1)
    assert split_jobs(8, 3, concurrent=False) == (1, 1)


def test_round_jobs_shares_the_cores_only_in_a_short_last_round():
    assert [round_jobs(2, i, 4) for i in range(4)] == [1, 1, 1, 1]  # the last two start together
    assert [round_jobs(2, i, 5) for i in range(5)] == [1, 1, 1, 1, 2]
    assert [round_jobs(4, i, 6) for i in range(6)] == [1, 1, 1, 1, 2, 2]
    assert round_jobs(8, 0, 3) == 2 and round_jobs(8, 0, 1) == 8
    assert round_jobs(1, 3, 9) == 1


# -- Pipeline: blocks of a part --------------------------------------------------------------


def _recording(pipeline: Pipeline) -> tuple[Pipeline, RecordingCoder]:
    """The same pipeline with its entropy coder wrapped in a recorder (the pipeline picks its
    part coder when it is built, so the coder is given to the constructor)."""
    recorder = RecordingCoder(pipeline.coder)
    rebuilt = Pipeline(
        pipeline.serializer, pipeline.prior, recorder, pipeline.stages, pipeline.window,
        pipeline.batch,
    )  # fmt: skip
    return rebuilt, recorder


def test_pipeline_blocks_are_coded_concurrently_and_bytes_do_not_depend_on_jobs(grads):
    pipeline, recorder = _recording(Pipeline.from_config(SMALL_BATCHES))
    serial = pipeline.compress(grads, jobs=1)
    n_blocks = len(recorder.intervals)
    assert n_blocks >= 10 and max_overlap(recorder.intervals) == 1

    recorder.intervals.clear()
    parallel = pipeline.compress(grads, jobs=4)
    assert parallel == serial
    assert len(recorder.intervals) == n_blocks
    assert max_overlap(recorder.intervals) >= 2  # blocks really were in flight together

    for jobs in (1, 3, None):
        assert same_bits(pipeline.decompress(parallel, jobs=jobs), grads)
        assert same_bits(decompress(parallel, jobs=jobs), grads)


def test_a_prior_that_is_not_thread_safe_codes_one_block_at_a_time(grads):
    pipeline = Pipeline.from_config(SMALL_BATCHES)
    pipeline.prior.thread_safe = False  # as an LM prior declares
    pipeline, recorder = _recording(pipeline)
    blob = pipeline.compress(grads, jobs=4)
    assert max_overlap(recorder.intervals) == 1
    assert blob == Pipeline.from_config(SMALL_BATCHES).compress(grads)


def test_one_pipeline_used_by_many_threads_at_once(grads):
    """What the codecs do with a cached pipeline: several arrays through one instance at once."""
    pipeline = Pipeline.from_config(SMALL_BATCHES)
    arrays = [np.roll(grads[:3000], 97 * k) * (k + 1) for k in range(4)]
    serial = [pipeline.compress(a) for a in arrays]
    assert map_ordered(pipeline.compress, arrays, jobs=4) == serial
    back = map_ordered(pipeline.decompress, serial, jobs=4)
    assert all(same_bits(b, a) for a, b in zip(arrays, back, strict=True))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    bits=st.lists(st.integers(0, 2**32 - 1), min_size=0, max_size=700),
    jobs=st.integers(2, 5),
)
def test_any_floats_give_the_same_bytes_for_any_jobs(bits, jobs):
    """Raw bit patterns (NaN payloads, -0.0, inf, subnormals) over a few small batches."""
    x = np.array(bits, dtype=np.uint32).view(np.float32)
    pipeline = Pipeline.from_config({"prior": "adaptive", "window": 64, "batch": 2})
    blob = pipeline.compress(x, jobs=jobs)
    assert blob == pipeline.compress(x, jobs=1)
    assert same_bits(pipeline.decompress(blob, jobs=jobs), x)


# -- Zarr v3 / v2: chunks --------------------------------------------------------------------


@pytest.fixture
def fresh_cache(caplog):
    """An empty pipeline cache, and chunk intervals kept (their logger at DEBUG)."""
    from lmgc_core.codecs.numcodecs_codec import clear_pipeline_cache

    caplog.set_level(logging.DEBUG, logger="lmgc_core.codecs.numcodecs_codec")
    clear_pipeline_cache()
    yield
    clear_pipeline_cache()


def _zarr_round_trip(
    path: Path, x: np.ndarray, zarr_format: int, prior: str | dict = "adaptive"
) -> dict[str, int]:
    """Write and read ``x`` through a real store; the peak number of chunks coded at once."""
    import zarr

    from lmgc_core.codecs.dask import codec_kwargs
    from lmgc_core.codecs.numcodecs_codec import chunk_intervals

    z = zarr.create_array(
        str(path),
        shape=x.shape,
        chunks=(1, x.shape[1]),
        dtype=x.dtype,
        **codec_kwargs({"prior": prior}, zarr_format),
    )
    z[:] = x
    back = zarr.open_array(str(path), mode="r")[:]
    assert same_bits(back, x)
    log = chunk_intervals()
    peaks = {}
    for op in ("encoded", "decoded"):
        spans = [(s, e) for o, s, e, _ in log if o == op]
        assert len(spans) == x.shape[0]
        peaks[op] = max_overlap(spans)
    return peaks


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    """8 chunks of 16,384 real gradients (the shared sample, tiled)."""
    g = np.load(TESTS_DIR / "data" / "mlp_grads_8k.npy").reshape(-1)
    return np.resize(g, (8, 16384)).astype(np.float32)


FLOAT_2 = {"name": "float", "level": 2}
"""Level 1 codes a 64 KB chunk in well under a millisecond, less than zarr takes to hand out the
next one, so only level 2's chunks last long enough to be seen in flight together."""


@pytest.mark.parametrize(
    ("zarr_format", "prior", "widen"), [(3, "adaptive", 1), (2, "adaptive", 1), (3, FLOAT_2, 8)]
)
def test_zarr_codes_chunks_concurrently_with_a_thread_safe_prior(
    tmp_path, rows, fresh_cache, zarr_format, prior, widen
):
    """``widen``: chunks that many times wider. Level 2 codes a 64 KB chunk in ~1 ms, and on a
    loaded machine (the suite beside other work) the pool's threads then ran the 8 chunks one
    after the other now and then; 512 KB chunks last ~8 ms each."""
    peaks = _zarr_round_trip(tmp_path / "a.zarr", np.tile(rows, widen), zarr_format, prior)
    assert peaks["encoded"] >= 2 and peaks["decoded"] >= 2, peaks


def test_zarr_queues_chunks_of_a_prior_that_must_serialize(
    tmp_path, rows, fresh_cache, monkeypatch
):
    from lmgc_basic_priors.adaptive import AdaptivePrior

    monkeypatch.setattr(AdaptivePrior, "thread_safe", False)
    peaks = _zarr_round_trip(tmp_path / "a.zarr", rows, 3)
    assert peaks == {"encoded": 1, "decoded": 1}


# -- CLI ----------------------------------------------------------------------------------------


def _lmgc(*args: str) -> None:
    proc = subprocess.run([LMGC, *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr


def test_cli_chunks_coded_ahead_give_identical_bytes(tmp_path, grads):
    """Many chunks, two coded at a time (the float prior is thread-safe) while the archive is
    written: the same archive as one thread, and it decodes bit-exactly."""
    src = tmp_path / "g.npy"
    np.save(src, grads)
    outputs = []
    for jobs in ("1", "2"):
        out = tmp_path / f"g{jobs}.lmgc"
        _lmgc("compress", str(src), "-o", str(out), "--prior", "float", "--chunk-size", "4096",
              "--jobs", jobs)  # fmt: skip
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]
    back = tmp_path / "back.npy"
    _lmgc("decompress", str(tmp_path / "g2.lmgc"), "-o", str(back), "--jobs", "2")
    assert back.read_bytes() == src.read_bytes()


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_cli_jobs_give_identical_bytes(tmp_path, grads, suffix):
    src = tmp_path / f"g{suffix}"
    if suffix == ".npy":
        np.save(src, grads)
        originals = {"": grads}
    else:
        originals = {"w": grads[:6000].reshape(60, 100), "b": grads[6000:], "c": -grads[:300]}
        np.savez(src, **originals)
    outputs = []
    for jobs in ("1", "2", "0"):
        out = tmp_path / f"g{jobs}.lmgc"
        _lmgc("compress", str(src), "-o", str(out), "--jobs", jobs)
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1] == outputs[2]  # the whole archive, byte for byte

    back = tmp_path / f"back{suffix}"
    _lmgc("decompress", str(tmp_path / "g2.lmgc"), "-o", str(back), "--jobs", "2")
    if suffix == ".npy":
        assert same_bits(np.load(back), grads)
    else:
        with np.load(back) as z:
            assert sorted(z.files) == sorted(originals)
            assert all(same_bits(z[k], v) for k, v in originals.items())


@pytest.mark.parametrize("concurrent", [True, False])
def test_archive_chunks_run_ahead_only_for_a_thread_safe_prior(tmp_path, grads, concurrent):
    """A thread-safe prior's chunks are coded on worker threads while the caller writes; any
    other prior (a language model) codes in the caller's thread, one chunk after another."""
    from lmgc_core.files.filecodec import FileEncoder, compress_file
    from lmgc_core.files.readers import scan
    from lmgc_core.util.progress import Progress

    src = tmp_path / "g.npy"
    x = np.concatenate([grads, grads[:512]])  # 8 chunks of 4096 bytes and one of 2048
    np.save(src, x)
    pipe = Pipeline.from_config({"prior": "float"})
    threads: list[int] = []
    block_jobs: list[int] = []

    class Watched(FileEncoder):
        def tensor(self, arr, update, jobs):
            threads.append(threading.get_ident())
            block_jobs.append(jobs)
            return super().tensor(arr, update, jobs)

    encoder = Watched(pipe)
    encoder.concurrent = concurrent
    with open(src, "rb") as f, open(tmp_path / "g.lmgc", "wb") as out:
        layout = scan(f, src.stat().st_size, "g.npy", None, None)
        with Progress(x.nbytes, "test", quiet=True) as bar:
            compress_file(f, layout, "g.npy", out, encoder, bar, 4096, 2)
    n = 9  # the lone last chunk is a short last round
    assert len(threads) == n
    assert (threading.get_ident() in threads) is not concurrent
    # two chunks at a time on one thread each, the lone last one on both; else the blocks
    assert sorted(block_jobs) == ([1] * (n - 1) + [2] if concurrent else [2] * n)
