"""Process-wide caches shared by threads without a caller's lock: the header's recent values
(:mod:`lmgc_core.stream.container`) and :func:`lmgc_core.util.caches.drop_oldest`. Threads that
decode different streams evict and reorder one another's entries; before, a lookup could raise
``KeyError`` or ``RuntimeError`` (dictionary changed size) out of a valid stream's decode."""

from __future__ import annotations

import sys
import threading

from lmgc_core.stream import container
from lmgc_core.util.caches import drop_oldest


def _hammer(work, threads: int = 8) -> list[BaseException]:
    errors: list[BaseException] = []
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch often: the races show within a second

    def run(k: int) -> None:
        try:
            work(k)
        except BaseException as exc:
            errors.append(exc)

    try:
        pool = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
    finally:
        sys.setswitchinterval(old)
    return errors


def test_recent_header_values_survive_threads_that_evict_them():
    name = "test-recent-values"
    texts = [f"[{i},{i + 1}]" for i in range(3 * container.RECENT_VALUES)]

    def work(k: int) -> None:
        for i in range(4000):
            text = texts[(i * 7 + k) % len(texts)]
            container._remember_value(name, text, [1, 2])
            hit = container._recent_value(text + "}", 0, name)
            assert hit is None or hit[1] == len(text)

    try:
        assert _hammer(work) == []
    finally:
        container._RECENT_VALUES.pop(name, None)


def test_drop_oldest_keeps_a_shared_cache_bounded_under_threads():
    cache: dict[int, int] = {}

    def work(k: int) -> None:
        for i in range(20000):
            drop_oldest(cache, 16)
            cache[k * 100000 + i] = i

    assert _hammer(work) == []
    assert len(cache) <= 16 + 8  # each thread may insert once past a race


def test_the_parallel_helpers_work_where_no_thread_can_start(monkeypatch, tmp_path):
    """A process or cgroup limit on threads: the commands failed ('can't start new thread')
    where one thread does the work."""
    from lmgc_core.files.source_hash import FileHash
    from lmgc_core.files.writers import HashingWriter
    from lmgc_core.util import parallel

    def refuse(self):  # type: ignore[no-untyped-def]
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refuse)
    items = list(range(40))
    assert parallel.map_ordered(lambda i: i * i, items, 4) == [i * i for i in items]
    assert list(parallel.run_ahead(lambda i: i + 1, items, 4, workers=3)) == [i + 1 for i in items]
    assert parallel.in_background(lambda: 7, 4)() == 7
    import io

    (tmp_path / "f").write_bytes(b"abc")  # a real file: a thread is tried for it
    with open(tmp_path / "f", "rb") as f, FileHash(f, 4) as file_hash:
        assert file_hash.result() == __import__("hashlib").sha256(b"abc").hexdigest()
    sink = HashingWriter(io.BytesIO(), background=True)
    sink.write(b"abc")
    assert sink.hexdigest() == __import__("hashlib").sha256(b"abc").hexdigest()


def test_run_ahead_runs_each_item_once_when_a_later_thread_cannot_start(monkeypatch):
    """The first worker started, the second did not: the item queued for it was run by the
    caller and by the started worker (twice, its progress counted twice)."""
    from lmgc_core.util import parallel

    start = threading.Thread.start
    started: list[int] = []

    def once(self):  # type: ignore[no-untyped-def]
        if started:
            raise RuntimeError("can't start new thread")
        started.append(1)
        start(self)

    monkeypatch.setattr(threading.Thread, "start", once)
    runs: list[int] = []
    lock = threading.Lock()

    def work(i: int) -> int:
        with lock:
            runs.append(i)
        return i * 10

    out = list(parallel.run_ahead(work, range(12), 4, workers=3))
    assert out == [i * 10 for i in range(12)]
    assert sorted(runs) == list(range(12))
