"""Fuzz: random, truncated and mutated ``.npy``, ``.npz``, ``.safetensors`` and ``.lmgc`` inputs
through the CLI, every command on every kind of file: ``compress``, ``decompress``, ``ls``,
``info`` and ``info --json`` each meet each seed (sources and archives of every source format,
and a bare stream), whatever it was mutated into.

Every run must end with status 0, 1 or 2 — never a traceback, never an unexpected exception
(whose line names ``LMGC_DEBUG``), never a hang (a 20 s alarm per case) — and a failure is one
``error:`` line that leaves no output behind. A success must be right, not just quiet:

* ``decompress`` exiting 0 wrote exactly the original source file (or, for the bare stream, the
  original array's bytes); anything else is silent data loss and fails the test with the case;
* ``compress`` exiting 0 wrote an archive that ``decompress`` turns back into exactly the bytes
  it was given, mutated as they were (whatever compress accepts, decompress restores);
* ``ls`` and ``info`` exiting 0 printed a listing (``--json``: one JSON document).

Besides blind byte and bit mutations (anywhere, in the first bytes, in the last ones where a
zip keeps its central directory, and inside zip local and central headers), *structured*
mutations rewrite the JSON inside a file and repair its checksums — safetensors headers, archive
manifests, stream headers — so the parsers behind the CRCs are exercised too.
"""

from __future__ import annotations

import io
import json
import random
import re
import signal
import struct
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from lmgc_core.cli.commands import cli
from lmgc_core.files.archive import MANIFEST
from lmgc_core.stream import container

N_CASES = 2250
COMMANDS = ("compress", "decompress", "ls", "info", "info --json")
SOURCES = ("s.npy", "s.npz", "c.npz", "s.safetensors", "n.safetensors")
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # all but tab and newline


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


@dataclass(frozen=True)
class Seed:
    """A file to mutate and, for an lmgc file, what decompressing it must give."""

    data: bytes
    original: bytes | None  # the source's bytes (None: not an lmgc file)
    out_suffix: str  # decompress writes the source's format under this suffix


def _seeds(tmp: Path, grads: np.ndarray) -> dict[str, Seed]:
    from safetensors.numpy import save_file

    from lmgc_core import Pipeline

    np.save(tmp / "s.npy", grads[:64].reshape(8, 8))
    np.savez(tmp / "s.npz", w=grads[:40].reshape(4, 10), b=grads[:3].astype(np.float16))
    np.savez_compressed(tmp / "c.npz", w=grads[:40], i=np.arange(6, dtype=np.int16))
    save_file({"w": grads[:48].reshape(6, 8), "b": grads[:5]}, str(tmp / "s.safetensors"))
    # names that would clear the screen and rewrite a line if printed raw
    save_file({"w\x1b[2J\r\n": grads[:8], "\x07b": grads[:2]}, str(tmp / "n.safetensors"))
    seeds = {}
    runner = CliRunner()
    for name in SOURCES:
        source = (tmp / name).read_bytes()
        seeds[name] = Seed(source, None, ".out")
        result = runner.invoke(cli, ["compress", str(tmp / name), "--chunk-size", "1024"])
        assert result.exit_code == 0, result.stderr
        seeds[f"{name}.lmgc"] = Seed((tmp / f"{name}.lmgc").read_bytes(), source, Path(name).suffix)
    # a bare stream (no archive): raw output is the array's bytes
    bare = Pipeline.from_config().compress(grads[:30])
    seeds["bare.lmgc"] = Seed(bare, grads[:30].tobytes(), ".raw")
    return seeds


# -- mutations ---------------------------------------------------------------------------------


def _position(rng: random.Random, n: int) -> int:
    """Anywhere, or in the first or last 160 bytes (headers; a zip's central directory)."""
    where = rng.random()
    if where < 0.3:
        return rng.randrange(min(n, 160))
    if where < 0.6:
        return n - 1 - rng.randrange(min(n, 160))
    return rng.randrange(n)


def _flip(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        if out:
            out[_position(rng, len(out))] = rng.randrange(256)
    return bytes(out)


def _bit(rng: random.Random, data: bytes) -> bytes:
    """One single-bit flip: what a bad disk or a bad copy does."""
    out = bytearray(data)
    if out:
        out[_position(rng, len(out))] ^= 1 << rng.randrange(8)
    return bytes(out)


ZIP_RECORDS = {b"PK\x03\x04": 30, b"PK\x01\x02": 46, b"PK\x05\x06": 22}


def _zip_header_bit(rng: random.Random, data: bytes) -> bytes:
    """One bit flipped inside a zip record (local header, central directory entry or end record
    with the name that follows): sizes, offsets, name and comment lengths, names."""
    records = [
        (pos, size)
        for sig, size in ZIP_RECORDS.items()
        for pos in _find_all(data, sig)
        if pos + size <= len(data)
    ]
    if not records:
        return _bit(rng, data)
    pos, size = rng.choice(records)
    extent = size
    if size != 22:  # the name follows a local or central header
        extent += struct.unpack_from("<H", data, pos + (26 if size == 30 else 28))[0]
    out = bytearray(data)
    i = min(pos + rng.randrange(extent), len(out) - 1)
    out[i] ^= 1 << rng.randrange(8)
    return bytes(out)


def _find_all(data: bytes, sub: bytes) -> Iterator[int]:
    i = data.find(sub)
    while i >= 0:
        yield i
        i = data.find(sub, i + 1)


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
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, change(info.filename, src.read(info)))
    return out.getvalue()


def _stream_header(rng: random.Random, blob: bytes) -> bytes:
    header, offset = container.read_header(blob)
    return container.pack(_mutate_json(rng, header), []) + blob[offset:]  # CRC repaired


def _archive_structure(rng: random.Random, data: bytes) -> bytes:
    """Mutate the manifest or one member inside a valid zip (zip CRCs repaired), or the header
    of a bare stream (its CRC repaired)."""
    if data[:4] != b"PK\x03\x04":
        return _stream_header(rng, data) if data[:4] == b"LMGC" else _flip(rng, data)
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        names = z.namelist()
    target = MANIFEST if rng.random() < 0.5 and MANIFEST in names else rng.choice(names)

    def change(name: str, member: bytes) -> bytes:
        if name != target:
            return member
        if name == MANIFEST:
            return json.dumps(_mutate_json(rng, json.loads(member))).encode()
        return _stream_header(rng, member) if member[:4] == b"LMGC" else _flip(rng, member)

    return _rezip(data, change)


MUTATIONS = [
    _flip,
    _bit,
    _zip_header_bit,
    _cut,
    _splice,
    _random,
    _safetensors_header,
    _archive_structure,
]


@dataclass(frozen=True)
class Case:
    i: int
    seed: str
    mutation: str
    command: str
    data: bytes

    def __str__(self) -> str:
        return f"case {self.i} ({self.command} on {self.seed} after {self.mutation})"


def _cases(seeds: dict[str, Seed], n: int, first: int = 0) -> Iterator[Case]:
    """Case ``i`` takes seed ``i % S`` and command ``(i // S) % C``: every ``S * C`` cases run
    every command on every seed once (S and C have no say in each other)."""
    rng = random.Random(20240610)
    names = sorted(seeds)
    for i in range(first, first + n):
        name = names[i % len(names)]
        command = COMMANDS[(i // len(names)) % len(COMMANDS)]
        mutation = rng.choice(MUTATIONS)
        if mutation is _safetensors_header and ".safetensors" not in name:
            mutation = _bit
        if mutation is _archive_structure and not (name.endswith(".lmgc") or "npz" in name):
            mutation = _cut
        yield Case(i, name, mutation.__name__, command, mutation(rng, seeds[name].data))


# -- running and checking a case ---------------------------------------------------------------


@dataclass
class Outcome:
    status: int
    stdout: str
    stderr: str
    problem: str | None = None  # an exception that is not SystemExit (in-process runs)


def _invoke(args: list[str]) -> Outcome:
    result = CliRunner().invoke(cli, args)
    problem = None
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        problem = repr(result.exception)
    return Outcome(result.exit_code, result.stdout, result.stderr, problem)


class Checker:
    """Runs one case's command (through ``run``) and checks what it did."""

    def __init__(self, tmp: Path, seeds: dict[str, Seed], run: Callable[[list[str]], Outcome]):
        self.tmp, self.seeds, self.run = tmp, seeds, run
        self.counts: Counter[tuple[str, str, int]] = Counter()  # (seed, command, status)
        self.verified: Counter[str] = Counter()  # successes whose output was compared

    def __call__(self, case: Case, slot: int) -> None:
        seed = self.seeds[case.seed]
        suffixes = "".join(Path(case.seed).suffixes)
        path = self.tmp / f"case{slot}{suffixes}"
        path.write_bytes(case.data)
        out = self.tmp / f"out{slot}{seed.out_suffix if case.command == 'decompress' else '.lmgc'}"
        out.unlink(missing_ok=True)
        command = case.command.split()
        if command[0] == "compress":
            extra = ["-o", str(out), "-q"]
        elif command[0] == "decompress":
            extra = ["-o", str(out), "-q"] + (["-f"] if case.i % 2 else [])  # -f: skip mismatch
        else:
            extra = []
        args = [*command, str(path), *extra]
        with alarm(20, f"{case}: {args}"):
            got = self.run(args)
        where = f"{case}: {args}\n{got.stderr}"
        self._check_status(got, where)
        self.counts[case.seed, case.command, got.status] += 1
        if got.status:
            assert not out.exists(), f"a failed run left its output behind: {where}"
            assert not list(self.tmp.glob("*.part")), f"a failed run left a .part file: {where}"
            return
        if command[0] == "decompress":
            assert seed.original is not None, f"decompress took a non-lmgc file: {where}"
            assert out.read_bytes() == seed.original, f"SILENT DATA LOSS (exit 0): {where}"
        elif command[0] == "compress":
            back = self.tmp / f"back{slot}{suffixes}"
            back.unlink(missing_ok=True)
            restored = self.run(["decompress", str(out), "-o", str(back), "-q"])
            assert restored.status == 0, f"compress accepted, decompress refused: {where}\n" + (
                restored.stderr
            )
            assert back.read_bytes() == case.data, f"compress + decompress changed bytes: {where}"
        elif case.command == "info --json":
            assert isinstance(json.loads(got.stdout), dict), where
        else:
            assert got.stdout.strip(), f"{case.command} succeeded and printed nothing: {where}"
        self.verified[case.command] += 1

    @staticmethod
    def _check_status(got: Outcome, where: str) -> None:
        assert got.status in (0, 1, 2), where
        assert got.problem is None, where + got.problem
        assert "Traceback" not in got.stderr and "LMGC_DEBUG" not in got.stderr, where
        assert "Exception ignored" not in got.stderr, where
        # names from a damaged file never reach the terminal raw (escape sequences, \r, ...)
        assert not CONTROL.search(got.stdout + got.stderr), f"control characters: {where}"
        if got.status:
            lines = got.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: "), where


def test_every_command_on_every_unmutated_seed(tmp_path, grads):
    """The checks below on files nobody touched: each lmgc file decompresses to its original and
    lists; each source compresses into an archive that restores it; nothing else succeeds."""
    seeds = _seeds(tmp_path, grads)
    check = Checker(tmp_path, seeds, _invoke)
    for i, (name, command) in enumerate((n, c) for n in sorted(seeds) for c in COMMANDS):
        check(Case(i, name, "none", command, seeds[name].data), 0)
    for name, seed in seeds.items():
        for command in COMMANDS:
            if seed.original is None:  # a source: only compress takes it
                want = 0 if command == "compress" else 1
            else:  # an archive is also a zip that compress takes; a stream (a bare one, or
                # s.npy's compact form: one array in one chunk) needs --dtype
                want = 2 if command == "compress" and seed.data[:4] == b"LMGC" else 0
            assert check.counts[name, command, want] == 1, (name, command, check.counts)
    # the outputs compared: 6 decompressions, 5 sources and 4 archives compressed and restored
    assert check.verified["decompress"] == 6 and check.verified["compress"] == 9
    assert check.verified["ls"] == check.verified["info --json"] == 6


@pytest.mark.slow
def test_fuzzed_inputs_never_crash_the_cli_nor_lose_data(tmp_path, grads):
    seeds = _seeds(tmp_path, grads)
    check = Checker(tmp_path, seeds, _invoke)
    failures = []
    for case in _cases(seeds, N_CASES):
        try:
            check(case, case.i % 7)
        except AssertionError as exc:  # go on: the report lists every failing case
            failures.append(str(exc).split("\nassert")[0])
    assert not failures, f"{len(failures)} failing cases:\n" + "\n".join(failures[:30])
    # every command met every seed, many times over
    pairs = Counter((seed, command) for seed, command, _ in check.counts.elements())
    assert len(pairs) == len(seeds) * len(COMMANDS)
    assert min(pairs.values()) >= N_CASES // (len(seeds) * len(COMMANDS))
    statuses = Counter(status for _, _, status in check.counts.elements())
    print(f"\nstatuses {dict(statuses)}, verified successes {dict(check.verified)}")
    assert statuses[1] > N_CASES // 2  # most mutations are caught as bad data
    # mutated sources still compress (a flipped data byte is still data): restores compared
    assert check.verified["compress"] > 50


def test_fuzzed_inputs_through_the_real_executable(tmp_path, grads):
    """A few cases through the installed ``lmgc`` script (separate processes), every command and
    every kind of file among them, checked the same way."""
    import shutil
    import subprocess
    import sys

    exe = shutil.which("lmgc") or str(Path(sys.executable).parent / "lmgc")

    def run(args: list[str]) -> Outcome:
        proc = subprocess.run([exe, *args], capture_output=True, text=True, timeout=120)
        return Outcome(proc.returncode, proc.stdout, proc.stderr)

    seeds = _seeds(tmp_path, grads)
    check = Checker(tmp_path, seeds, run)
    # every fourth of the next round of cases: each seed and each command at least once
    for case in list(_cases(seeds, len(seeds) * len(COMMANDS), first=N_CASES))[::4]:
        check(case, case.i % 3)
    assert {s for s, _, _ in check.counts} == set(seeds)
    assert {c for _, c, _ in check.counts} == set(COMMANDS)
