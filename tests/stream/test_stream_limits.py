"""Bounded memory for any input (issue 19): what a stream header declares is checked before
anything of that size is inflated, parsed or allocated.

Each hostile case is a real stream (made by the real pipeline) with its header or blocks
re-packed, decoded in a fresh subprocess that reports its peak RSS and wall time: refused with
lmgc's error, under 400 MB and 10 s (the issue measured gigabytes and tens of seconds).
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lmgc_core.coding.pipeline import Pipeline, declared_array, decompress
from lmgc_core.stream import container
from lmgc_core.util.errors import ConfigError, StreamError

MAX_RSS_MB = 400
MAX_WALL_S = 10.0
ZEROS_VALUES = 384 << 20  # 1.5 GiB of float32 zeros
BLOCK_VALUES = 1 << 20


def _raw_stream(text: bytes, body: bytes = b"", *, level: int = 9) -> bytes:
    """A stream whose header is ``text`` deflated as is (the checksums right, so only the
    header's content is hostile)."""
    packer = zlib.compressobj(level, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY)
    head = packer.compress(text) + packer.flush()
    return _frame(head, body)


def _frame(head: bytes, body: bytes = b"") -> bytes:
    prefix = struct.pack("<4sBI", container.MAGIC, container.VERSION, len(head))
    return prefix + head + struct.pack("<I", zlib.crc32(prefix + head)) + body


def _repack(blob: bytes, edit: Any) -> bytes:
    """``blob`` with ``edit(header)`` applied, blocks unchanged."""
    header, offset = container.read_header(blob)
    edit(header)
    return container.pack(header, []) + blob[offset:]


def _run_case(tmp_path: Path, blob: bytes, code: str) -> dict[str, Any]:
    """Run ``code`` (``blob`` is bound to the stream's bytes) in a fresh interpreter; returns the
    error it raised (type and message), its peak RSS (MB) and wall time (s)."""
    path = tmp_path / "case.lmgc"
    path.write_bytes(blob)
    script = textwrap.dedent(
        """
        import json, resource, sys, time
        import numpy as np
        resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))  # a broken check fails fast
        blob = open(sys.argv[1], "rb").read()
        import lmgc_core, lmgc_core.coding.pipeline  # imports are not what is measured
        start = time.perf_counter()
        error = None
        try:
        {code}
        except Exception as exc:
            error = [type(exc).__name__, str(exc), [c.__name__ for c in type(exc).__mro__]]
        wall = time.perf_counter() - start
        # VmHWM, not ru_maxrss: that one keeps the parent's peak across fork + exec
        hwm = [ln for ln in open("/proc/self/status") if ln.startswith("VmHWM:")]
        rss = int(hwm[0].split()[1]) / 1024
        print(json.dumps({{"error": error, "rss_mb": rss, "wall_s": wall}}))
        """
    ).format(code=textwrap.indent(textwrap.dedent(code).strip(), "    "))
    done = subprocess.run(
        [sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _assert_refused(result: dict[str, Any], *words: str) -> None:
    error = result["error"]
    assert error is not None, "the hostile stream was accepted"
    _name, message, mro = error
    assert "StreamError" in mro and "ValueError" in mro, error
    for word in words:
        assert word in message, error
    assert result["rss_mb"] < MAX_RSS_MB, result
    assert result["wall_s"] < MAX_WALL_S, result


DECODE = "lmgc_core.decompress(blob)"


# -- the header: inflated size, JSON values, nesting -----------------------------------------------


def _bomb(prefix: bytes, chunk: bytes, n: int, suffix: bytes) -> bytes:
    """A valid stream whose header deflates ``prefix + chunk * n + suffix`` (built without
    deflating all of it: after a full flush every further ``chunk`` deflates to the same bytes).
    The header is raw deflate, as the current stream version (3) writes it."""
    packer = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY)
    start = packer.compress(prefix) + packer.flush(zlib.Z_FULL_FLUSH)
    piece = packer.compress(chunk) + packer.flush(zlib.Z_FULL_FLUSH)
    end = packer.compress(suffix) + packer.flush()
    return _frame(start + piece * n + end)


def test_header_deflate_bomb_is_refused_before_inflating(tmp_path):
    """~1 MB of header that inflates to 1 GiB (the issue: 2.1 GB RSS)."""
    blob = _bomb(b'{"pad":"', b" " * (1 << 20), 1024, b'"}')
    assert len(blob) < 1_100_000
    _assert_refused(_run_case(tmp_path, blob, DECODE), "inflates to over")


def test_header_of_empty_lists_is_refused(tmp_path):
    """A few hundred KB of deflated ``[]`` lists (the issue: 195 KB took 5 GB): refused by the
    inflated-size cap before the text is scanned or parsed."""
    blob = _bomb(b'{"x":[', b"[]," * (1 << 18), 512, b"[]]}")
    assert len(blob) < 500_000
    _assert_refused(_run_case(tmp_path, blob, DECODE), "inflates to over")


def test_header_with_too_many_values_is_refused_before_parsing(tmp_path):
    """Under the size cap but over the value cap: refused by the scan, json never runs."""
    text = b'{"x":[' + b"{}," * (4 << 20) + b"{}]}"
    assert len(text) < container.MAX_HEADER_TEXT
    result = _run_case(tmp_path, _raw_stream(text), DECODE)
    _assert_refused(result, "JSON values")


def test_deeply_nested_header_is_a_stream_error(tmp_path):
    """100,000 nested lists: a StreamError, never a RecursionError from the parser."""
    text = b'{"x":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    result = _run_case(tmp_path, _raw_stream(text), DECODE)
    _assert_refused(result, "deeper than")


def test_brackets_inside_strings_do_not_count():
    """The scan skips strings (escaped quotes included): such a header is an ordinary one."""
    header = {"note": '\\"[[[[' * 200 + "{{{{" * 100, "x": [[1, 2], {"y": '"]]'}]}
    container.check_json_text(json.dumps(header).encode())
    nested: Any = 1
    for _ in range(container.MAX_DEPTH):
        nested = [nested]
    container.check_json_text(json.dumps(nested).encode())
    with pytest.raises(StreamError, match="deeper"):
        container.check_json_text(json.dumps([nested]).encode())


def test_strings_cannot_hide_nesting():
    """Closing brackets inside strings do not lower the count, escaped quotes do not end one."""
    text = b'{"x":' + b'["]]]]]]]]",' * 100 + b"0" + b"]" * 100 + b"}"
    json.loads(text)
    with pytest.raises(StreamError, match="deeper"):
        container.check_json_text(text)
    text = b'{"x":"\\\\\\"' + b"[" * 100 + b'"}'  # three backslashes, then a quote
    assert json.loads(text)["x"].startswith('\\"[')
    container.check_json_text(text)


def _reference_scan(text: bytes) -> tuple[int, int]:
    values, depth, deepest, inside, escaped = 1, 0, 0, False, False
    for ch in text:
        if escaped:
            escaped = False
            if ch in b'"\\':
                continue
        elif ch == ord("\\"):
            escaped = True
            continue
        if ch == ord('"'):
            inside = not inside
        elif not inside:
            values += ch in b",[{"
            depth += (ch in b"[{") - (ch in b"]}")
            deepest = max(deepest, depth)
    return values, deepest


@pytest.mark.parametrize("chunk", [1, 7, 64])
def test_scan_counts_as_a_byte_by_byte_scanner(monkeypatch, chunk):
    """Across chunk edges (backslash runs and open strings carried) the scan agrees with the
    plain loop on random bracket, quote and backslash soup."""
    monkeypatch.setattr(container, "_SCAN_CHUNK", chunk)
    rng = np.random.default_rng(chunk)
    for _ in range(100):
        soup = rng.choice(np.frombuffer(b'[]{},"\\ a', np.uint8), size=int(rng.integers(1, 40)))
        text = soup.tobytes()
        values, deepest = _reference_scan(text)
        monkeypatch.setattr(container, "MAX_ELEMENTS", values)
        monkeypatch.setattr(container, "MAX_DEPTH", deepest)
        container.check_json_text(text)
        monkeypatch.setattr(container, "MAX_ELEMENTS", values - 1)
        with pytest.raises(StreamError, match="values"):
            container.check_json_text(text)
        if deepest:
            monkeypatch.setattr(container, "MAX_ELEMENTS", values)
            monkeypatch.setattr(container, "MAX_DEPTH", deepest - 1)
            with pytest.raises(StreamError, match="deeper"):
                container.check_json_text(text)


def test_shallow_check_never_passes_a_deeper_text():
    """The quick depth check of a header with many brackets (a layout's) says "shallow" only
    where the byte-by-byte scanner finds no deeper nesting, and says it for real headers."""
    rng = np.random.default_rng(3)
    for _ in range(3000):
        soup = rng.choice(np.frombuffer(b'[[]]{{}},"\\ a', np.uint8), size=int(rng.integers(1, 60)))
        text = soup.tobytes()
        _, deepest = _reference_scan(text)
        for limit in (max(deepest - 1, 0), deepest):
            if container._shallow(text, limit):
                assert deepest <= limit, text
    layout = {"layout": [[3, 3, 64, 64]] * 200, "name": "[[[x"}
    assert container._shallow(json.dumps(layout).encode(), 4)
    assert not container._shallow(json.dumps(layout).encode(), 2)


def test_headers_decoding_would_refuse_are_never_written():
    with pytest.raises(ConfigError, match="too big"):
        container.pack({"x": list(range(container.MAX_ELEMENTS))}, [])


# -- declared sizes against the listed blocks ---------------------------------------------------


def test_one_block_declaring_2_to_25_values_is_refused_fast(tmp_path):
    """The issue's 143-byte stream: float prior, ``block_values: 1``, one block, count 2**25
    (6 GB and 30-50 s before): the prior's block count is bounded before it is listed."""
    pipe = Pipeline.from_config({"prior": {"name": "float", "block_values": 1}})
    blob = pipe.compress(np.float32([1.5]))
    n = 1 << 25

    def edit(h: dict[str, Any]) -> None:
        h["array"]["shape"] = [n]
        h["parts"][0]["count"] = n
        h["parts"][0]["array"]["shape"] = [n]

    hostile = _repack(blob, edit)
    assert len(hostile) < 400
    _assert_refused(_run_case(tmp_path, hostile, DECODE), "segments")


def test_layout_of_millions_of_tiny_tensors_is_refused_fast(tmp_path):
    """A ``layout: [[1]]`` stream whose header declares 2**25 one-value tensors in 32 blocks:
    the float prior's segments are bounded before they are listed (3.7 GB before)."""
    pipe = Pipeline.from_config({"prior": {"name": "float", "layout": [[1]]}})
    blob = pipe.compress(np.float32([[1.5]]))
    header, offset = container.read_header(blob)
    n = 1 << 25
    header["array"]["shape"] = [n, 1]
    part = header["parts"][0]
    assert part["array"]["layout"] is True
    part["count"] = n
    part["array"]["shape"] = [n, 1]
    part["blocks"] = part["blocks"] * 32
    hostile = container.pack(header, [blob[offset:]] * 32)
    _assert_refused(_run_case(tmp_path, hostile, DECODE), "segments")


def test_float_segments_are_counted_exactly_before_they_are_listed():
    """The count that refuses a layout is the number of segments the cut would list."""
    from lmgc_float import formats

    rng = np.random.default_rng(0)
    for layout in [None, ((2,), (3, 2)), ((1,),), ((4, 2), (3,)), ((0,), (2,))]:
        total = sum(math.prod(s) for s in layout) if layout else 7
        for shape in [(0,), (1,), (5,), (3, 4), (2, 3, 4), (1, 9), (3, total), (total,)]:
            block_values = int(rng.choice([1, 2, 3, 5, 8, 64]))
            blocks, used = formats.segments(shape, layout, block_values)
            listed = sum(len(b) for b in blocks)
            if used and layout:
                counted = (
                    math.prod(shape)
                    // total
                    * sum(formats._n_pieces(s, block_values) for s in layout)
                )
            else:
                counted = formats._n_pieces(shape, block_values)
            assert counted == listed, (shape, layout, block_values)


def test_float_blocks_are_bounded_by_what_a_header_can_list():
    from lmgc_float import formats

    with pytest.raises(ConfigError, match="blocks"):
        formats.segments((container.MAX_BLOCKS + 10,), None, 1)


def test_step_coded_stream_declaring_billions_of_symbols_is_refused_fast(tmp_path):
    """A step-coded part (adaptive prior) whose count implies ~16 M windows against its one
    listed block: counted, not listed."""
    pipe = Pipeline.from_config({"prior": {"name": "adaptive"}})
    blob = pipe.compress(np.float32([1, 2]))
    n = 1 << 30

    def edit(h: dict[str, Any]) -> None:
        h["array"]["shape"] = [n]
        h["parts"][0]["count"] = n
        h["parts"][0]["n_symbols"] = pipe.serializer.n_symbols(4 * n)

    _assert_refused(_run_case(tmp_path, _repack(blob, edit), DECODE), "blocks")


def test_parts_must_add_up_to_the_array():
    """Without stages the one part is the array: any other size is refused."""
    blob = Pipeline.from_config({}).compress(np.float32([1, 2, 3]))

    def edit(h: dict[str, Any]) -> None:
        h["parts"][0]["count"] = 1000

    with pytest.raises(StreamError, match="parts of"):
        decompress(_repack(blob, edit))


def test_staged_parts_are_bounded_by_the_array():
    """With stages, parts may differ from the array but not exceed it many times over."""
    blob = Pipeline.from_config({"stages": ["quantize"]}).compress(np.float32([1, 2, 3]))

    def edit(h: dict[str, Any]) -> None:
        h["parts"][0]["count"] = 1 << 40

    with pytest.raises(StreamError, match="parts of"):
        decompress(_repack(blob, edit))


def test_stage_state_asking_for_too_much_memory_is_a_stream_error():
    """A quantize state with ``bits: 2**40``: refused before its inverse computes 2**bits."""
    blob = Pipeline.from_config({"stages": ["quantize"]}).compress(np.float32([1, 2, 3]))

    def edit(h: dict[str, Any]) -> None:
        h["stages"][0]["parts"]["data"]["bits"] = 1 << 40

    with pytest.raises(StreamError, match="bad bits"):
        decompress(_repack(blob, edit))


@pytest.mark.parametrize("shape", [[-1], [1.5], ["3"], [True], [1 << 62, 1 << 62]])
def test_bad_declared_shapes_are_stream_errors(shape):
    blob = Pipeline.from_config({}).compress(np.float32([1, 2, 3]))

    def edit(h: dict[str, Any]) -> None:
        h["array"]["shape"] = shape

    with pytest.raises(StreamError):
        decompress(_repack(blob, edit))


# -- the caller's limit ------------------------------------------------------------------------


def _zeros_stream() -> bytes:
    """A valid stream of 1.5 GiB of float32 zeros in ~110 KB (the issue's member): 384 equal
    blocks, since every block codes 2**20 zeros with fresh models (level 2, the issue's)."""
    pipe = Pipeline.from_config({"level": 2})
    one = pipe.compress(np.zeros(BLOCK_VALUES, np.float32))
    header, offset = container.read_header(one)
    block = one[offset:]
    n_blocks = ZEROS_VALUES // BLOCK_VALUES
    digest = hashlib.sha256(repr((ZEROS_VALUES,)).encode())
    zeros = bytes(64 << 20)
    for _ in range(ZEROS_VALUES * 4 // len(zeros)):
        digest.update(zeros)
    header["sha256"] = digest.hexdigest()
    header["array"]["shape"] = [ZEROS_VALUES]
    part = header["parts"][0]
    part["count"] = ZEROS_VALUES
    part["array"]["shape"] = [ZEROS_VALUES]
    part["blocks"] = part["blocks"] * n_blocks
    return container.pack(header, [block] * n_blocks)


@pytest.fixture(scope="module")
def zeros_stream() -> bytes:
    return _zeros_stream()


def test_zeros_stream_declares_what_the_issue_says(zeros_stream):
    assert len(zeros_stream) < 200_000
    dtype, shape = declared_array(container.read_header(zeros_stream)[0])
    assert dtype.itemsize * shape[0] == 1610612736 == 1.5 * (1 << 30)


def test_max_nbytes_refuses_before_decoding(tmp_path, zeros_stream):
    code = "lmgc_core.decompress(blob, max_nbytes=1 << 20)"
    _assert_refused(_run_case(tmp_path, zeros_stream, code), "1610612736 bytes", "1048576")


def test_max_nbytes_admits_what_fits():
    arr = np.arange(10, dtype=np.float32)
    blob = Pipeline.from_config({}).compress(arr)
    np.testing.assert_array_equal(decompress(blob, max_nbytes=40), arr)
    with pytest.raises(StreamError, match="40 bytes"):
        decompress(blob, max_nbytes=39)
    with pytest.raises(StreamError, match="40 bytes"):
        Pipeline.from_config({}).decompress(blob, max_nbytes=39)
    np.testing.assert_array_equal(decompress(blob, max_nbytes=np.int64(40)), arr)
    for bad in ("100000", -1, 40.0, True):  # not a comparison error from deep inside
        with pytest.raises(ConfigError, match="max_nbytes must be"):
            decompress(blob, max_nbytes=bad)


def test_numcodecs_decode_into_a_small_out_is_refused_first(tmp_path, zeros_stream):
    """``decode(buf, out=<10 values>)`` (the issue: 1.6 GB, then a bare "cannot reshape")."""
    code = """
    from lmgc_core.codecs.numcodecs_codec import LMGC
    LMGC().decode(blob, out=np.empty(10, np.float32))
    """
    _assert_refused(_run_case(tmp_path, zeros_stream, code), "1610612736 bytes", "40 bytes")


def test_zarr_chunk_replaced_by_a_bigger_stream_is_refused_first(tmp_path, zeros_stream):
    """A real Zarr v3 store on disk, one chunk file swapped for the 1.5 GiB stream: the chunk's
    shape is compared with the header before anything is decoded."""
    zarr = pytest.importorskip("zarr")
    from lmgc_core.codecs.zarr_codec import LMGCZarrCodec

    store = tmp_path / "a.zarr"
    data = np.linspace(-1, 1, 4 * 256, dtype=np.float32).reshape(4, 256)
    arr = zarr.create_array(
        str(store), shape=data.shape, chunks=(1, 256), dtype="float32",
        serializer=LMGCZarrCodec(), compressors=None,
    )  # fmt: skip
    arr[:] = data
    chunk = store / "c" / "2" / "0"
    assert chunk.is_file()
    np.testing.assert_array_equal(zarr.open_array(str(store), mode="r")[:], data)
    chunk.write_bytes(zeros_stream)
    code = f"""
    import zarr
    zarr.open_array({str(store)!r}, mode="r")[:]
    """
    result = _run_case(tmp_path, b"", code)
    _assert_refused(result, "1610612736 bytes", "1024 bytes")


# -- legitimate inputs keep working -------------------------------------------------------------


@pytest.mark.slow
def test_256_mb_of_zeros_round_trip():
    """A few bytes may legitimately stand for a large array: no cap refuses it."""
    arr = np.zeros(64 << 20, np.float32)
    blob = Pipeline.from_config({}).compress(arr, jobs=2)
    assert len(blob) < 100_000
    back = decompress(blob, jobs=2, max_nbytes=arr.nbytes)
    assert back.shape == arr.shape and back.dtype == arr.dtype
    assert not back.any() and not np.signbit(back).any()


def test_pipeline_cache_is_bounded_for_streams_with_many_configs(monkeypatch):
    """Chunks written by someone else may each record another configuration: the numcodecs
    pipeline cache keeps at most MAX_CACHED of them, the most recently used."""
    from lmgc_core.codecs import numcodecs_codec as nc

    nc.clear_pipeline_cache()
    monkeypatch.setattr(nc, "MAX_CACHED", 4)
    x = np.arange(64, dtype="<f4")
    blobs = [nc.compress_array({"prior": {"name": "float", "block_values": 8 + i}}, x)
             for i in range(10)]  # fmt: skip
    for blob in blobs:
        assert nc.decompress_blob(None, blob).tobytes() == x.tobytes()
    assert len(nc.pipeline_cache_info()["configs"]) <= 4
    nc.clear_pipeline_cache()


@pytest.mark.parametrize(
    "code", [DECODE, "from lmgc_core.codecs.numcodecs_codec import LMGC; LMGC().decode(blob)"]
)
def test_a_recorded_batch_of_2_to_the_40_is_refused_before_the_step_loop(tmp_path, code):
    """One 4-byte block, window 10, batch 2^40, 4 Mi values declared: the step loop padded the
    batch to 2^40 rows (1.1 GB, then a checksum error), and the numcodecs codec called the
    header's config the caller's ConfigError."""
    legit = Pipeline.from_config({"prior": {"name": "adaptive"}}).compress(np.zeros(64, np.float32))

    def edit(header: dict[str, Any]) -> None:
        n = 1 << 22
        header["array"]["shape"] = [n]
        part = header["parts"][0]
        part["count"], part["n_symbols"] = n, 9 * n
        part["blocks"] = [[4, zlib.crc32(bytes(4))]]
        header["pipeline"]["window"], header["pipeline"]["batch"] = 10, 1 << 40

    header, _ = container.read_header(legit)
    edit(header)
    blob = container.pack(header, []) + bytes(4)
    _assert_refused(_run_case(tmp_path, blob, code), "window 10 x batch 1099511627776")
