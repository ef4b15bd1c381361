"""Output hygiene (issue 19): a failed or interrupted command prints its one ``error:`` line and
nothing else (no "Exception ignored in ZipFile.__del__"), leaves no ``*.part`` file behind
(SIGINT: status 130, SIGTERM: 143), refuses up front an output larger than the free disk space,
and a conversion refuses tensor names that would collide or escape an ``.npz``."""

from __future__ import annotations

import ctypes
import io
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zipfile
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest

from lmgc_core.files import writers
from lmgc_core.files.segments import InputFileError, Tensor
from lmgc_core.util import interrupts
from tests.cli_helpers import lmgc, one_error_line


def _lmgc(*args: object, env: dict[str, str] | None = None) -> subprocess.Popen:
    """The real command in a process of its own (signals, garbage collection at exit)."""
    return subprocess.Popen(
        [sys.executable, "-m", "lmgc_core", *map(str, args)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=None if env is None else {**os.environ, **env},
    )


def _only_error_line(stderr: str, words: str) -> None:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], stderr


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part"))


def test_a_failed_compress_prints_one_line_and_leaves_nothing(tmp_path):
    arr = np.linspace(-1, 1, 5000, dtype=np.float32)
    arr[17] = np.nan
    np.save(tmp_path / "nan.npy", arr)
    proc = _lmgc("compress", tmp_path / "nan.npy", "--stage", "quantize:bits=8")
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1
    _only_error_line(stderr, "non-finite")
    assert "Exception ignored" not in stderr
    assert _leftovers(tmp_path) == [] and not (tmp_path / "nan.npy.lmgc").exists()


SLOW = ("-l", "2", "--chunk-size", 65536, "-j", 1)


@pytest.fixture(scope="module")
def slow_input(tmp_path_factory) -> Path:
    """16 MB of random bytes in small chunks: compressing them at level 2 on one thread
    (:data:`SLOW`) takes ~2.5 s, decompressing ~1 s, each chunk ms, so a signal sent 0.2 s
    into the output lands well inside the coding (4 MB on two threads took 0.45 s in all)."""
    folder = tmp_path_factory.mktemp("slow")
    rng = np.random.default_rng(0)
    np.save(folder / "u.npy", rng.integers(0, 256, 16 << 20, dtype=np.uint8))
    return folder / "u.npy"


@pytest.fixture(scope="module")
def slow_archive(slow_input) -> Path:
    archive = slow_input.with_name("u.lmgc")
    lmgc("compress", slow_input, "-o", archive, "-q", *SLOW)
    return archive


def _interrupt(proc: subprocess.Popen, folder: Path, sig: int) -> str:
    """Send ``sig`` once the command has started writing its output."""
    deadline = time.monotonic() + 60
    while not _leftovers(folder) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _leftovers(folder), "the command never started its output"
    time.sleep(0.2)  # well inside the coding
    assert proc.poll() is None, "the command finished before the signal"
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    return stderr


@pytest.mark.parametrize(
    ("sig", "status", "words"),
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated"),
     (signal.SIGHUP, 129, "hung up")],  # a closed terminal: a 14 MB hidden .part stayed
)  # fmt: skip
def test_signals_during_compress_leave_no_part_files(tmp_path, slow_input, sig, status, words):
    out = tmp_path / "u.lmgc"
    proc = _lmgc("compress", slow_input, "-o", out, "-q", *SLOW)
    stderr = _interrupt(proc, tmp_path, sig)
    assert proc.returncode == status, stderr
    _only_error_line(stderr, words)
    assert "Exception ignored" not in stderr and "Traceback" not in stderr
    assert _leftovers(tmp_path) == [] and not out.exists()


@pytest.mark.parametrize(
    ("sig", "status", "words"),
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated"),
     (signal.SIGHUP, 129, "hung up")],
)  # fmt: skip
def test_signals_during_decompress_leave_no_part_files(tmp_path, slow_archive, sig, status, words):
    archive = slow_archive
    folder = tmp_path / "out"
    folder.mkdir()
    proc = _lmgc("decompress", archive, "-o", folder / "u.npy", "-q", "-j", 1)
    stderr = _interrupt(proc, folder, sig)
    assert proc.returncode == status, stderr
    _only_error_line(stderr, words)
    assert _leftovers(folder) == [] and not (folder / "u.npy").exists()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_swallowed_by_a_c_callback_is_raised_at_the_next_write(monkeypatch, sig):
    """A signal that lands while C calls back into Python (numba compiling the integer model
    on the first chunk does, through ctypes) raises there, and ctypes prints and drops the
    exception: the run went on to the end. The next write raises it again, quietly."""
    saved = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(sys, "unraisablehook", sys.unraisablehook)
    monkeypatch.setattr(interrupts, "_delivered", False)
    seen = []
    monkeypatch.setattr(sys, "__unraisablehook__", seen.append)
    try:
        interrupts.install()

        def callback() -> None:
            os.kill(os.getpid(), sig)
            time.sleep(0.05)  # the handler runs here, inside the callback

        ctypes.CFUNCTYPE(None)(callback)()  # returns normally: the exception was dropped
        sink = writers.HashingWriter(io.BytesIO())
        expected = interrupts.Terminated if sig == signal.SIGTERM else KeyboardInterrupt
        with pytest.raises(expected):
            sink.write(b"next chunk")
        assert sink.size == 0 and seen == []  # nothing written, no "Exception ignored"
        sink.write(b"raised once")
    finally:
        signal.signal(signal.SIGINT, saved[0])
        signal.signal(signal.SIGTERM, saved[1])


Usage = namedtuple("Usage", "total used free")


@pytest.fixture
def archive(tmp_path) -> Path:
    arr = np.random.default_rng(2).standard_normal((64, 32)).astype(np.float32)
    np.savez(tmp_path / "w.npz", w=arr, b=arr[0])
    lmgc("compress", tmp_path / "w.npz", "-q")
    return tmp_path / "w.npz.lmgc"


@pytest.mark.parametrize(
    ("output", "need"),
    [("back.npz", "source"), ("conv.safetensors", "arrays"), ("-", "source")],
)
def test_decompress_refuses_an_output_larger_than_the_free_space(
    tmp_path, archive, monkeypatch, output, need
):
    size = (tmp_path / "w.npz").stat().st_size
    arrays = 64 * 32 * 4 + 32 * 4
    want = size if need == "source" else arrays
    asked = []

    def usage(path):
        asked.append(str(path))
        return Usage(1 << 40, 0, want - 1)

    monkeypatch.setattr(shutil, "disk_usage", usage)
    target = output if output == "-" else tmp_path / output
    message = one_error_line(lmgc("decompress", archive, "-o", target, ok=False), 1)
    assert f"takes {want} bytes" in message and f"has {want - 1} bytes free" in message
    assert asked and (output == "-" or asked == [str(tmp_path)])
    assert _leftovers(tmp_path) == [] and not (tmp_path / output).exists()
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(1 << 40, 0, want))
    lmgc("decompress", archive, "-o", target, "-f")  # exactly enough is enough


def _safetensors(path: Path, names: list[str]) -> None:
    header, pos = {}, 0
    for name in names:
        header[name] = {"dtype": "F32", "shape": [4], "data_offsets": [pos, pos + 16]}
        pos += 16
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + bytes(pos))


@pytest.mark.parametrize("name", ["../../x", "/etc/x", "a/../../x", "C:/x", "a//b", "."])
def test_converting_to_npz_refuses_names_that_are_unsafe_paths(tmp_path, name):
    src = tmp_path / "odd.safetensors"
    _safetensors(src, ["ok", name])
    lmgc("compress", src, "-q")
    message = one_error_line(lmgc("decompress", f"{src}.lmgc", "-o", tmp_path / "o.npz",
                                  ok=False), 1)  # fmt: skip
    assert "not a safe member name" in message and repr(name) in message
    assert not (tmp_path / "o.npz").exists() and _leftovers(tmp_path) == []
    lmgc("decompress", f"{src}.lmgc", "-o", tmp_path / "back.safetensors")  # its own format


def test_converting_refuses_two_tensors_of_one_name(tmp_path):
    """An .npz may hold ``a.npy`` and ``a`` (both arrays named ``a``): a conversion would keep
    one of them silently."""
    arr = np.arange(8, dtype=np.float32)
    src = tmp_path / "dup.npz"
    with zipfile.ZipFile(src, "w") as zf:
        for member in ("a.npy", "a"):
            with zf.open(member, "w") as f:
                np.lib.format.write_array(f, arr)
    lmgc("compress", src, "-q")
    for out in ("o.safetensors", "o.raw"):
        args = ("--format", "raw") if out == "o.raw" else ()
        result = lmgc("decompress", f"{src}.lmgc", "-o", tmp_path / out, *args, ok=False)
        if out == "o.raw":  # raw bytes have no names: both arrays, back to back
            assert result.exit_code == 0
            assert (tmp_path / out).read_bytes() == arr.tobytes() * 2
            continue
        assert "two tensors named 'a'" in one_error_line(result, 1)


def test_the_npz_writer_refuses_duplicates_and_unsafe_names(tmp_path):
    def write(names: list[str]) -> bytes:
        tensors = [Tensor(n, np.dtype("<f4"), (2,)) for n in names]
        path = tmp_path / "o.npz"
        with open(path, "wb") as f:
            sink = writers.HashingWriter(f)
            writers.write_npz(tensors, lambda i: iter([np.zeros(2, "<f4")]), sink)
        return path.read_bytes()

    with pytest.raises(InputFileError, match="two tensors named 'x'"):
        write(["x", "y", "x"])
    with pytest.raises(InputFileError, match="two tensors named 'arr_1'"):
        write(["arr_1", ""])  # the nameless one would be arr_1 too
    for bad in ("../x", "/x", "x/../../y", "\\x", "a\0b", "a\ud800b"):  # a lone surrogate
        with pytest.raises(InputFileError, match="not a safe member name"):
            write(["fine", bad])
    write(["x", "dir/y", "z"])
    with np.load(tmp_path / "o.npz") as z:
        assert sorted(z) == ["dir/y", "x", "z"]


def test_an_interrupt_before_the_commands_handlers_is_one_line(monkeypatch, capsys):
    """Ctrl-C in the first ~0.1 s (while the command loads) printed a traceback."""
    import pytest

    from lmgc_core import __main__ as entry
    from lmgc_core.cli import commands

    def interrupted() -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(commands, "main", interrupted)
    with pytest.raises(SystemExit) as exit_info:
        entry.main()
    assert exit_info.value.code == 130
    assert capsys.readouterr().err == "error: interrupted\n"


def test_a_missing_extra_names_what_to_install(tmp_path, monkeypatch):
    """`lmgc collect` / `bench` without the bench extra: 'No module named zarr
    (ModuleNotFoundError; LMGC_DEBUG=1 shows where)'."""
    import sys

    monkeypatch.setitem(sys.modules, "zarr", None)
    message = one_error_line(lmgc("collect", "--out", tmp_path / "g.zarr", ok=False), 1)
    assert "needs zarr, which is not installed (pip install 'lmgc[zarr]')" in message


def test_python_m_lmgc_core_cli_runs_the_command():
    """It said 'lmgc_core.cli is a package and cannot be directly executed'."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "lmgc_core.cli", "--version"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0 and "lmgc, version" in done.stdout, done.stderr


def test_several_inputs_never_write_over_one_another(tmp_path):
    """``compress -f x x.lmgc`` replaced the user's ``x.lmgc`` with x's archive before reading
    it; ``decompress -f x.lmgc.lmgc x.lmgc`` replaced the archive x.lmgc before decoding it; a
    folder among several inputs (it needs -o) was refused after the files before it were
    written."""
    x = tmp_path / "x"
    x.write_bytes(bytes(range(256)) * 16)
    (tmp_path / "x.lmgc").write_text("notes of mine")
    said = one_error_line(lmgc("compress", "-f", "--dtype", "uint8", x, f"{x}.lmgc", ok=False), 2)
    assert "is an input and would be written as an output" in said
    assert (tmp_path / "x.lmgc").read_text() == "notes of mine"
    lmgc("compress", "-q", "--dtype", "uint8", x, "-o", f"{x}.lmgc", "-f")
    lmgc("compress", "-q", "--dtype", "uint8", x, "-o", f"{x}.lmgc.lmgc")
    archive = (tmp_path / "x.lmgc").read_bytes()
    said = one_error_line(lmgc("decompress", "-f", f"{x}.lmgc.lmgc", f"{x}.lmgc", ok=False), 2)
    assert "is an input" in said and (tmp_path / "x.lmgc").read_bytes() == archive
    (tmp_path / "m").mkdir()
    np.save(tmp_path / "a.npy", np.ones(8, np.float32))
    said = one_error_line(lmgc("compress", tmp_path / "a.npy", tmp_path / "m", ok=False), 2)
    assert "m is a folder: it needs -o" in said and not (tmp_path / "a.npy.lmgc").exists()


def test_outputs_a_link_leading_nowhere_or_a_folder_name_are_refused(tmp_path):
    """A dangling link at the output name was replaced without --force; ``-o new/`` wrote a
    file named ``new``."""
    np.save(tmp_path / "a.npy", np.ones(8, np.float32))
    (tmp_path / "a.npy.lmgc").symlink_to(tmp_path / "elsewhere" / "a.npy.lmgc")
    said = one_error_line(lmgc("compress", tmp_path / "a.npy", ok=False), 2)
    assert "exists; use --force" in said and (tmp_path / "a.npy.lmgc").is_symlink()
    new = f"{tmp_path}/new/"
    said = one_error_line(lmgc("compress", tmp_path / "a.npy", "-o", new, ok=False), 2)
    assert "names a folder" in said and not (tmp_path / "new").exists()


def _lmgc_command(*args: object) -> list[str]:
    return [sys.executable, "-m", "lmgc_core", *map(str, args)]


def test_non_blocking_pipes_lose_nothing(tmp_path):
    """A pipe another process set non-blocking (node, some CI log collectors): stdout got
    131,072 of 12 MB with holes, and stdin's first 'no data yet' was taken for its end, both
    with exit 0 and "identical to the source"."""
    data = np.random.default_rng(0).standard_normal(1 << 20).astype(np.float32)
    np.save(tmp_path / "big.npy", data)
    lmgc("compress", "-q", tmp_path / "big.npy")
    r, w = os.pipe()
    os.set_blocking(w, False)
    proc = subprocess.Popen(_lmgc_command("decompress", "-q", tmp_path / "big.npy.lmgc", "-o", "-"),
                            stdout=w, stderr=subprocess.PIPE)  # fmt: skip
    os.close(w)
    got = bytearray()
    while chunk := (time.sleep(0.001), os.read(r, 1 << 16))[1]:  # a slow reader
        got += chunk
    os.close(r)
    assert proc.wait() == 0, proc.stderr.read()
    assert bytes(got) == (tmp_path / "big.npy").read_bytes()
    raw = data[: 1 << 18].tobytes()
    r, w = os.pipe()
    os.set_blocking(r, False)
    out = tmp_path / "raw.lmgc"
    proc = subprocess.Popen(_lmgc_command("compress", "-q", "-", "--dtype", "float32", "-o", out),
                            stdin=r, stderr=subprocess.PIPE)  # fmt: skip
    os.close(r)
    for i in range(0, len(raw), 1 << 16):  # a writer that delivers in pieces
        os.write(w, raw[i : i + (1 << 16)])
        time.sleep(0.01)
    os.close(w)
    assert proc.wait() == 0, proc.stderr.read()
    assert lmgc("decompress", out, "-o", "-", "-q").stdout_bytes == raw


def test_dev_stdout_is_standard_output(tmp_path):
    """``-o /dev/stdout`` needed --force, put the summary line into the data, and, with stdout
    a regular file, replaced the /dev/stdout link (its file got only the summary)."""
    np.save(tmp_path / "a.npy", np.arange(100, dtype=np.float32))
    lmgc("compress", "-q", tmp_path / "a.npy")
    with open(tmp_path / "out.npy", "wb") as out:
        command = _lmgc_command("decompress", tmp_path / "a.npy.lmgc", "-o", "/dev/stdout")
        done = subprocess.run(command, stdout=out, stderr=subprocess.PIPE)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out.npy").read_bytes() == (tmp_path / "a.npy").read_bytes()
    assert b"identical to the source" in done.stderr and os.path.islink("/dev/stdout")


def test_closed_or_terminal_standard_streams_and_odd_names(tmp_path):
    """A closed stdout turned a written file into exit 1 ('NoneType' has no attribute
    'flush'); a closed stdin gave "'NoneType' has no attribute 'buffer'"; ``-.lmgc`` came back
    on stdout, not as a file named ``-``; a full stdout blamed TMPDIR."""
    np.save(tmp_path / "a.npy", np.arange(100, dtype=np.float32))
    closed = subprocess.run(_lmgc_command("compress", tmp_path / "a.npy"), stderr=subprocess.PIPE,
                            preexec_fn=lambda: os.close(1))  # fmt: skip
    assert closed.returncode == 0, closed.stderr
    no_stdin = subprocess.run(_lmgc_command("compress", "-", "-o", tmp_path / "x.lmgc"),
                              stderr=subprocess.PIPE, preexec_fn=lambda: os.close(0),
                              text=True)  # fmt: skip
    assert no_stdin.returncode == 2 and "standard input is closed" in no_stdin.stderr
    (tmp_path / "-.lmgc").write_bytes((tmp_path / "a.npy.lmgc").read_bytes())
    done = subprocess.run(_lmgc_command("decompress", "-q", "--", "-.lmgc"), cwd=tmp_path,
                          capture_output=True)  # fmt: skip
    assert done.returncode == 0 and done.stdout == b""
    assert (tmp_path / "-").read_bytes() == (tmp_path / "a.npy").read_bytes()
    (tmp_path / ".lmgc").write_bytes((tmp_path / "a.npy.lmgc").read_bytes())
    done = subprocess.run(
        _lmgc_command("decompress", ".lmgc"), cwd=tmp_path, capture_output=True, text=True
    )  # fmt: skip  ("error:  is a folder" before)
    assert done.returncode == 2 and "its output would have no name" in done.stderr
    with open("/dev/full", "wb") as full:
        done = subprocess.run(_lmgc_command("decompress", tmp_path / "a.npy.lmgc", "-o", "-"),
                              stdout=full, stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert done.returncode == 1 and "<stdout>: No space left on device" in done.stderr


def test_an_output_that_appears_meanwhile_is_kept_without_force(tmp_path, monkeypatch):
    """check_output looked once, at the start, and the finished output was renamed over a
    file created meanwhile (another lmgc writing the same name): now it is linked into place,
    which fails where a name exists."""
    from lmgc_core.files import outputs

    np.save(tmp_path / "a.npy", np.arange(100, dtype=np.float32))
    target = tmp_path / "a.npy.lmgc"
    real = outputs._put_in_place

    def late(tmp, path, force):
        target.write_text("someone else's")
        real(tmp, path, force)

    monkeypatch.setattr(outputs, "_put_in_place", late)
    said = one_error_line(lmgc("compress", tmp_path / "a.npy", ok=False), 2)
    assert "appeared while this command ran" in said
    assert target.read_text() == "someone else's" and _leftovers(tmp_path) == []


def test_a_bare_lmgc_shows_its_help_and_pipes_are_read_by_path(tmp_path):
    """A bare ``lmgc`` squashed the whole help into one "error:" line (click 8.2); an input
    given as a pipe's path (``<(...)``, a FIFO) failed with "not seekable"."""
    done = subprocess.run(_lmgc_command(), capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("Usage:") and "\n" in done.stdout
    np.save(tmp_path / "a.npy", np.arange(100, dtype=np.float32))
    os.mkfifo(tmp_path / "fifo")
    command = _lmgc_command("compress", "-q", tmp_path / "fifo", "--format", "npy", "-o",
                            tmp_path / "f.lmgc")  # fmt: skip
    proc = subprocess.Popen(command, stderr=subprocess.PIPE)
    with open(tmp_path / "fifo", "wb") as fifo:
        fifo.write((tmp_path / "a.npy").read_bytes())
    assert proc.wait(timeout=60) == 0, proc.stderr.read()
    back = lmgc("decompress", tmp_path / "f.lmgc", "-o", "-", "-q").stdout_bytes
    assert back == (tmp_path / "a.npy").read_bytes()


def _run(*args: object, **kwargs: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lmgc_core", *map(str, args)], **kwargs)


def test_outputs_that_are_pipes_or_stdout_by_another_name(tmp_path):
    """-o /proc/self/fd/1 was refused because procfs has '0 bytes free' (the output is spooled
    in TMPDIR); a pipe given by its path (>(cmd), a FIFO) needed --force, as if it were a file
    to replace; -o /dev/stderr with stderr a file replaced, as root, the /dev/stderr link."""
    data = tmp_path / "g.npy"
    np.save(data, np.random.default_rng(0).standard_normal(3000).astype(np.float32))
    _run("compress", data, "-o", tmp_path / "g.lmgc", "-q", check=True)
    with open(tmp_path / "back.npy", "wb") as out:
        _run("decompress", tmp_path / "g.lmgc", "-o", "/proc/self/fd/1", "-q", stdout=out,
             check=True)  # fmt: skip
    assert (tmp_path / "back.npy").read_bytes() == data.read_bytes()
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE)
    _run("decompress", tmp_path / "g.lmgc", "-o", fifo, "-q", check=True)  # no --force
    assert reader.communicate()[0] == data.read_bytes()
    with open(tmp_path / "err.txt", "w") as err:
        proc = _run("compress", data, "-o", "/dev/stderr", "-f", "-q", stderr=err)
    assert proc.returncode == 2
    assert "standard error" in (tmp_path / "err.txt").read_text()
    with open("/dev/zero", "w") as sink:  # a device that is stderr too is written into
        assert _run("compress", data, "-o", "/dev/zero", "-f", "-q", stderr=sink).returncode == 0


def test_a_file_size_limit_is_named_with_the_output(tmp_path):
    """ulimit -f gave a bare 'error: File too large' (only a full disk was named)."""
    import resource

    data = tmp_path / "g.npy"
    np.save(data, np.random.default_rng(0).standard_normal(20_000).astype(np.float32))

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    proc = _run("compress", data, "-o", tmp_path / "g.lmgc", capture_output=True, text=True,
                preexec_fn=small_files)  # fmt: skip
    assert proc.returncode == 1 and "File too large (writing" in proc.stderr
    assert not (tmp_path / "g.lmgc").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["g.npy"]  # no temporary file left
