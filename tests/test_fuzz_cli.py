"""Fuzz: 2,000 random, truncated and mutated ``.npy``, ``.npz``, ``.safetensors`` and ``.lmgc``
inputs through the CLI. Every run must end with status 0, 1 or 2 — never a traceback, never an
unexpected exception (whose line names ``LMGC_DEBUG``), never a hang (a 20 s alarm per case) —
and a failure is one ``error:`` line.

Besides blind byte mutations (which zip and stream CRCs mostly catch early), *structured*
mutations rewrite the JSON inside a file and repair its checksums — safetensors headers, archive
manifests, stream headers — so the parsers behind the CRCs are exercised too.
"""

from __future__ import annotations

import json
import random
import signal
import struct
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from lmgc_core import container
from lmgc_core.archive import MANIFEST
from lmgc_core.cli import cli

N_CASES = 2000


@contextmanager
def alarm(seconds: int, what: str) -> Iterator[None]:
    def hang(*_: object) -> None:
        raise TimeoutError(f"hang: {what}")

    old = signal.signal(signal.SIGALRM, hang)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _seeds(tmp: Path, grads: np.ndarray) -> dict[str, bytes]:
    from safetensors.numpy import save_file

    np.save(tmp / "s.npy", grads[:64].reshape(8, 8))
    np.savez(tmp / "s.npz", w=grads[:40].reshape(4, 10), b=grads[:3].astype(np.float16))
    np.savez_compressed(tmp / "c.npz", w=grads[:40], i=np.arange(6, dtype=np.int16))
    save_file({"w": grads[:48].reshape(6, 8), "b": grads[:5]}, str(tmp / "s.safetensors"))
    seeds = {name: (tmp / name).read_bytes() for name in ("s.npy", "s.npz", "c.npz")}
    seeds["s.safetensors"] = (tmp / "s.safetensors").read_bytes()
    runner = CliRunner()
    for name in ("s.npy", "s.npz", "s.safetensors"):
        result = runner.invoke(cli, ["compress", str(tmp / name), "--chunk-size", "1024"])
        assert result.exit_code == 0, result.stderr
        seeds[f"{name}.lmgc"] = (tmp / f"{name}.lmgc").read_bytes()
    from lmgc_core import Pipeline

    seeds["bare.lmgc"] = Pipeline.from_config().compress(grads[:30])
    return seeds


# -- mutations ---------------------------------------------------------------------------------


def _flip(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        if out:
            pos = (
                rng.randrange(min(len(out), 160)) if rng.random() < 0.6 else rng.randrange(len(out))
            )
            out[pos] = rng.randrange(256)
    return bytes(out)


def _cut(rng: random.Random, data: bytes) -> bytes:
    return data[: rng.randrange(len(data) + 1)]


def _splice(rng: random.Random, data: bytes) -> bytes:
    a, b = sorted(rng.randrange(len(data) + 1) for _ in range(2))
    return data[:a] + rng.randbytes(rng.randrange(8)) + data[b:]


def _random(rng: random.Random, data: bytes) -> bytes:
    head = data[: rng.choice([0, 4, 6, 8, 9])]  # sometimes keep the magic bytes
    return head + rng.randbytes(rng.randrange(400))


def _mutate_json(rng: random.Random, value: object, depth: int = 0) -> object:
    """Replace one value somewhere in a JSON document with something plausible but wrong."""
    wrong = [None, -1, 0, 1, 2**40, 2**64, 3.5, "", "x", "<f4", "|O", "bfloat16", [], {},
             [1, -2], "[('a', '<i2')]", True, "AAAA", ["tensor", 99], ["deflated", 7, []],
             ["literal", "!"]]  # fmt: skip
    if isinstance(value, dict) and value and rng.random() < 0.85:
        key = rng.choice(list(value))
        if rng.random() < 0.1:
            return {k: v for k, v in value.items() if k != key}
        return {**value, key: _mutate_json(rng, value[key], depth + 1)}
    if isinstance(value, list) and value and rng.random() < 0.85:
        i = rng.randrange(len(value))
        return [*value[:i], _mutate_json(rng, value[i], depth + 1), *value[i + 1 :]]
    return rng.choice(wrong)


def _safetensors_header(rng: random.Random, data: bytes) -> bytes:
    if data[:6] == b"\x93NUMPY" or data[:2] == b"PK" or len(data) < 8:
        return _flip(rng, data)
    (n,) = struct.unpack("<Q", data[:8])
    try:
        header = json.loads(data[8 : 8 + n])
    except ValueError:
        return _flip(rng, data)
    text = json.dumps(_mutate_json(rng, header)).encode()
    return struct.pack("<Q", len(text)) + text + data[8 + n :]


def _rezip(data: bytes, change: Callable[[str, bytes], bytes]) -> bytes:
    import io

    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, change(info.filename, src.read(info)))
    return out.getvalue()


def _stream_header(rng: random.Random, blob: bytes) -> bytes:
    header, offset = container.read_header(blob)
    return container.pack(_mutate_json(rng, header), []) + blob[offset:]  # CRC repaired


def _archive_structure(rng: random.Random, data: bytes) -> bytes:
    """Mutate the manifest or one stream header inside a valid zip (zip CRCs repaired)."""
    if data[:4] != b"PK\x03\x04":
        return _stream_header(rng, data) if data[:4] == b"LMGC" else _flip(rng, data)
    with zipfile.ZipFile(__import__("io").BytesIO(data)) as z:
        names = z.namelist()
    target = MANIFEST if rng.random() < 0.5 and MANIFEST in names else rng.choice(names)

    def change(name: str, member: bytes) -> bytes:
        if name != target:
            return member
        if name == MANIFEST:
            return json.dumps(_mutate_json(rng, json.loads(member))).encode()
        return _stream_header(rng, member) if member[:4] == b"LMGC" else _flip(rng, member)

    return _rezip(data, change)


MUTATIONS = [_flip, _cut, _splice, _random, _safetensors_header, _archive_structure]


def _cases(seeds: dict[str, bytes], n: int) -> Iterator[tuple[str, bytes, str]]:
    rng = random.Random(20240610)
    names = sorted(seeds)
    for i in range(n):
        name = names[i % len(names)]
        mutation = rng.choice(MUTATIONS)
        if mutation in (_safetensors_header,) and not name.endswith(".safetensors"):
            mutation = _flip
        if mutation is _archive_structure and not name.endswith(".lmgc"):
            mutation = _cut
        yield name, mutation(rng, seeds[name]), mutation.__name__


def _command(name: str, path: Path, i: int) -> list[str]:
    if not name.endswith(".lmgc"):
        return ["compress", str(path), "-o", str(path) + ".out", "-f", "-q"]
    command = ("decompress", "info", "ls", "info --json")[i % 4].split()
    extra = ["-o", str(path) + ".out", "-f", "-q"] if command[0] == "decompress" else []
    return [*command, str(path), *extra]


@pytest.mark.slow
def test_fuzzed_inputs_never_crash_the_cli(tmp_path, grads):
    seeds = _seeds(tmp_path, grads)
    runner = CliRunner()
    statuses: dict[int, int] = {}
    for i, (name, data, how) in enumerate(_cases(seeds, N_CASES)):
        path = tmp_path / f"case{i % 7}{''.join(Path(name).suffixes)}"
        path.write_bytes(data)
        args = _command(name, path, i)
        with alarm(20, f"case {i} ({name}, {how}): {args}"):
            result = runner.invoke(cli, args)
        where = f"case {i} ({name}, {how}): {args}\n{result.stderr}"
        assert result.exit_code in (0, 1, 2), where
        assert result.exception is None or isinstance(result.exception, SystemExit), where + repr(
            result.exception
        )
        assert "Traceback" not in result.stderr and "LMGC_DEBUG" not in result.stderr, where
        if result.exit_code:
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: "), where
        statuses[result.exit_code] = statuses.get(result.exit_code, 0) + 1
    assert sum(statuses.values()) >= 1000
    assert statuses.get(1, 0) > 1000  # most mutations are caught as bad data


def test_fuzzed_inputs_through_the_real_executable(tmp_path, grads):
    """A few of the same cases through the installed ``lmgc`` script (separate processes)."""
    import shutil
    import subprocess
    import sys

    exe = shutil.which("lmgc") or str(Path(sys.executable).parent / "lmgc")
    seeds = _seeds(tmp_path, grads)
    for i, (name, data, how) in enumerate(_cases(seeds, 12)):
        path = tmp_path / f"p{i}{''.join(Path(name).suffixes)}"
        path.write_bytes(data)
        args = _command(name, path, i)
        proc = subprocess.run([exe, *args], capture_output=True, text=True, timeout=120)
        where = f"{name} {how} {args}: {proc.stderr}"
        assert proc.returncode in (0, 1, 2) and "Traceback" not in proc.stderr, where
        assert "LMGC_DEBUG" not in proc.stderr, where
        if proc.returncode:
            assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, where
