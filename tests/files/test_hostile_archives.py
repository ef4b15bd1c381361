"""Hostile archives through ``lmgc decompress`` (``-j 1`` and ``-j 2``), ``ls`` and ``info``.

Real archives of every kind the CLI writes — a multi-tensor ``.safetensors`` cut in chunks at
levels 1 and 2, ``.npz`` stored and deflated, a single ``.npy`` in the compact form (C and
Fortran order, levels 1 and 2) and as a zip, a ``--base`` delta archive and a ``torch.save``
file — are damaged in every way a disk, a download or a hand can damage them: every byte of the
zip structure (local headers, central directory, end record, manifest member) changed, a sample
of member data bytes changed, truncation at many offsets, garbage appended or prepended, zip
members swapped, duplicated, dropped or renamed (the zip rewritten, its CRCs right), the
manifest's fields edited with its CRC recomputed, and a compact stream's ``file`` record and
header edited with its header CRC recomputed.

Every run must either write exactly the original file or fail with one ``error:`` line (an
``LMGCError``, status 1) and leave nothing at the output path: never an unexpected exception,
never exit 0 with other bytes. A few edits make another *valid* archive (the source format
changed, a literal byte changed together with ``identical``): those must still end cleanly, and
are listed in ``DIFFERENT_ARCHIVE``. Other tests cover single bits through the library
(``test_fuzz_archive_bits.py``) and random mutations of small files through the CLI
(``test_fuzz_cli.py``); here every kind of archive meets every kind of damage, on both decoding
paths (one thread; members read and decoded ahead on two).
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import math
import random
import shutil
import struct
import subprocess
import sys
import warnings
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from safetensors.numpy import save_file

from lmgc_core.cli.commands import cli
from lmgc_core.files.archive import MANIFEST
from lmgc_core.stream import container

RNG_SEED = 20261205
STRUCTURE_SAMPLE = 220
"""Structure bytes changed per archive besides the end record (every one: ``slow``)."""
DATA_SAMPLE = 40
"""Member data bytes changed per archive (stream and zip CRCs cover them; the fast kernel's
own checks are flipped bit by bit in tests/plugins/lmgc_float/test_fast_canonical.py)."""
TRUNCATE_STEP = 9
"""Truncated at every 9th offset (and at the first and last 40 bytes)."""
DEBUG = {"LMGC_DEBUG": "1"}
"""An unexpected exception then escapes the CLI, so the runner reports it as one."""


@dataclass(frozen=True)
class Seed:
    name: str
    archive: bytes
    original: bytes
    suffix: str
    extra: tuple[str, ...] = ()
    """Arguments decompress needs (``--base``)."""


def _compress(src: Path, out: Path, *args: str | Path) -> bytes:
    result = CliRunner().invoke(cli, ["compress", str(src), "-o", str(out), "-q", *map(str, args)])
    assert result.exit_code == 0, (result.stderr, result.exception)
    return out.read_bytes()


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory, grads: np.ndarray) -> dict[str, Seed]:
    tmp = tmp_path_factory.mktemp("hostile")
    g = grads
    found: dict[str, Seed] = {}

    def add(name: str, src: Path, *args: str | Path, extra: tuple[str, ...] = ()) -> None:
        blob = _compress(src, tmp / f"{name}.lmgc", *args)
        found[name] = Seed(name, blob, src.read_bytes(), src.suffix, extra)

    tensors = {
        "w": g[:1024].reshape(32, 32),
        "h": g[1024:1536].astype(np.float16),
        "i": np.arange(40, dtype=np.int32),
        "u": (np.arange(30) % 7).astype(np.uint8),
    }
    save_file(tensors, str(tmp / "m.safetensors"), {"format": "pt"})
    add("safetensors", tmp / "m.safetensors", "--chunk-size", "1024")
    add("safetensors-l2", tmp / "m.safetensors", "--chunk-size", "1024", "-l", "2")
    np.savez(tmp / "s.npz", a=g[:300].reshape(30, 10), b=g[300:310].astype(np.float64),
             c=np.arange(12, dtype=np.int16).reshape(3, 4))  # fmt: skip
    add("npz", tmp / "s.npz", "--chunk-size", "1024")
    np.savez_compressed(tmp / "c.npz", a=g[:400], k=np.arange(9, dtype=np.int64))
    add("npz-deflated", tmp / "c.npz")
    np.save(tmp / "a.npy", g[:600].reshape(20, 30))
    add("npy-compact", tmp / "a.npy")
    add("npy-compact-l2", tmp / "a.npy", "-l", "2")
    add("npy-zip", tmp / "a.npy", "--chunk-size", "1024")
    np.save(tmp / "f.npy", np.asfortranarray(g[:600].reshape(20, 30)))
    add("npy-fortran", tmp / "f.npy")
    (tmp / "r.bin").write_bytes(g[:700].tobytes())
    add("raw-compact", tmp / "r.bin", "--dtype", "float32")
    new = {**tensors, "w": (tensors["w"] * np.float32(1.01)).astype(np.float32)}
    save_file(new, str(tmp / "new.safetensors"), {"format": "pt"})
    base = tmp / "m.safetensors"
    add("base", tmp / "new.safetensors", "--base", base, extra=("--base", str(base)))
    torch = pytest.importorskip("torch")
    w = torch.from_numpy(g[:256].reshape(16, 16).copy())
    torch.save({"w": w, "b": torch.arange(5.0), "view": w[2:4]}, tmp / "t.pt")
    add("torch", tmp / "t.pt")
    for seed in found.values():
        assert seed.archive[:4] == (b"LMGC" if "compact" in seed.name or "fortran" in seed.name
                                    else b"PK\x03\x04"), seed.name  # fmt: skip
    return found


# -- damage ----------------------------------------------------------------------------------


def regions(blob: bytes) -> tuple[list[int], list[int]]:
    """``(structure offsets, member data offsets)``: for a zip, the local headers with their
    names, the manifest member, the central directory and the end record are structure; for a
    compact stream, its prefix, header and header CRC."""
    if blob[:4] == container.MAGIC:
        offset = container.read_header(blob)[1]
        return list(range(offset)), list(range(offset, len(blob)))
    data: set[int] = set()
    with zipfile.ZipFile(io.BytesIO(blob)) as z:  # Zip64 sizes and offsets resolved
        for info in z.infolist():
            if info.filename == MANIFEST:
                continue
            pos = info.header_offset
            assert blob[pos : pos + 4] == b"PK\x03\x04"
            n, m = struct.unpack_from("<HH", blob, pos + 26)
            data.update(range(pos + 30 + n + m, pos + 30 + n + m + info.compress_size))
    return [p for p in range(len(blob)) if p not in data], sorted(data)


def byte_changes(
    rng: random.Random, blob: bytes, every: bool = False
) -> Iterator[tuple[str, bytes]]:
    """One byte changed: the last 22 (a zip's end record) and a sample of the other structure
    bytes (``every``: all of them), and a sample of member data."""
    structure, data = regions(blob)
    sample = (
        structure
        if every
        else (
            rng.sample(structure[:-22], min(STRUCTURE_SAMPLE, len(structure) - 22))
            + structure[-22:]
        )
    )
    for p in sample + rng.sample(data, min(DATA_SAMPLE, len(data))):
        out = bytearray(blob)
        out[p] ^= rng.randrange(1, 256)
        yield f"byte {p} of {'structure' if p in structure else 'data'}", bytes(out)


def truncations(blob: bytes) -> Iterator[tuple[str, bytes]]:
    n = len(blob)
    cuts = set(range(0, n, TRUNCATE_STEP)) | set(range(40)) | set(range(n - 40, n))
    for p in sorted(cuts):
        yield f"cut at {p}", blob[:p]


def garbage(rng: random.Random, blob: bytes) -> Iterator[tuple[str, bytes]]:
    noise = bytes(rng.randrange(256) for _ in range(100))
    end = b"PK\x05\x06" + bytes(18)
    tails = {"1 zero": b"\0", "22 zeros": bytes(22), "its end record": blob[-22:],
             "noise": noise, "itself": blob, "an empty end record": end}  # fmt: skip
    for label, extra in tails.items():
        yield f"appended {label}", blob + extra
    yield "prepended 4 zeros", bytes(4) + blob
    yield "prepended noise", noise + blob


Items = list[tuple[zipfile.ZipInfo, bytes]]


def rezip(blob: bytes, change: Callable[[Items], Items]) -> bytes:
    """The archive's members through ``change``, written back by ``zipfile`` (every CRC and
    offset right, the manifest deflated again)."""
    with zipfile.ZipFile(io.BytesIO(blob)) as src:
        items = [(info, src.read(info)) for info in src.infolist()]
    out = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns of duplicate names
        with zipfile.ZipFile(out, "w") as dst:
            for info, data in change(items):
                dst.writestr(info, data)
    return out.getvalue()


def _renamed(info: zipfile.ZipInfo, name: str) -> zipfile.ZipInfo:
    new = zipfile.ZipInfo(name, date_time=info.date_time)
    new.compress_type = info.compress_type
    return new


def member_surgery(blob: bytes) -> Iterator[tuple[str, bytes]]:
    """Members swapped (whole, or only their data under their names), duplicated, dropped and
    renamed, in a zip that is otherwise valid."""
    if blob[:4] != b"PK\x03\x04":
        return
    with zipfile.ZipFile(io.BytesIO(blob)) as z:
        n = len(z.namelist()) - 1  # the data members; the manifest is last

    def swap(i: int) -> Callable[[Items], Items]:
        return lambda items: [*items[:i], items[i + 1], items[i], *items[i + 2 :]]

    def swap_data(i: int) -> Callable[[Items], Items]:
        def change(items: Items) -> Items:
            (a, da), (b, db) = items[i], items[i + 1]
            return [*items[:i], (a, db), (b, da), *items[i + 2 :]]

        return change

    for i in range(n - 1):
        yield f"members {i} and {i + 1} swapped", rezip(blob, swap(i))
        yield f"data of members {i} and {i + 1} swapped", rezip(blob, swap_data(i))
    for i in range(n):
        yield f"member {i} twice", rezip(blob, lambda it, i=i: it[: i + 1] + it[i:])
        yield f"member {i} dropped", rezip(blob, lambda it, i=i: it[:i] + it[i + 1 :])
        yield (
            f"member {i} renamed",
            rezip(
                blob,
                lambda it, i=i: [*it[:i], (_renamed(it[i][0], "zz.lmgc"), it[i][1]), *it[i + 1 :]],
            ),
        )
        yield (
            f"member {i} renamed as the manifest",
            rezip(
                blob,
                lambda it, i=i: [*it[:i], (_renamed(it[i][0], MANIFEST), it[i][1]), *it[i + 1 :]],
            ),
        )
    yield "the manifest moved first", rezip(blob, lambda it: it[-1:] + it[:-1])
    yield (
        "the manifest stored",
        rezip(blob, lambda it: [*it[:-1], (_renamed(it[-1][0], MANIFEST), it[-1][1])]),
    )


# -- crafted manifests and headers (CRCs recomputed) -------------------------------------------

DIFFERENT_ARCHIVE = ("format=", "identical=False and a literal byte", "file record dropped",
                     "file record raw", "file head: no newline", "file record npy")  # fmt: skip
"""Edits that make another valid archive (its own CRCs right, nothing in it contradicting
anything else): the output may differ from the original, but the run must still end cleanly."""


def _manifest(blob: bytes) -> dict:
    with zipfile.ZipFile(io.BytesIO(blob)) as z:
        return json.loads(z.read(MANIFEST))


def _edit_manifest(blob: bytes, edit: Callable[[dict], None]) -> bytes:
    def change(items: Items) -> Items:
        info, text = items[-1]
        manifest = json.loads(text)
        edit(manifest)
        return [*items[:-1], (info, json.dumps(manifest, separators=(",", ":")).encode())]

    return rezip(blob, change)


def _flip_literal(manifest: dict) -> None:
    for seg in manifest["segments"]:
        if seg[0] == "literal":
            data = bytearray(base64.b64decode(seg[1]))
            data[len(data) // 2] ^= 1
            seg[1] = base64.b64encode(bytes(data)).decode()
            return


def manifest_edits(blob: bytes) -> Iterator[tuple[str, bytes]]:
    """One field of the manifest changed at a time; the zip's CRC of it recomputed."""
    if blob[:4] != b"PK\x03\x04":
        return
    original = _manifest(blob)
    tensors = original["tensors"]
    for k, t in enumerate(tensors):
        shape = t["shape"]
        count = int(np.prod(shape, dtype=np.int64))
        edits: dict[str, object] = {
            "nbytes": [t["nbytes"] + 4, max(0, t["nbytes"] - 4), 0, 10**15],
            "shape": [shape[::-1], [count], [*shape, 1], [1, *shape], [], [count * 1000]],
            "dtype": ["int32", "float16", "uint8", "float64", ">f4", "bfloat16", "V4", 5],
            "tag": ["I32", "BF16", "XX"],
            "fortran": [True],
            "name": [tensors[(k + 1) % len(tensors)]["name"], ""],
            "members": [t["members"][::-1], t["members"] + t["members"][:1], t["members"][:-1]],
            "declared_shape": [[5]],
            "bytes": [True],
            "base": ["w", "no such tensor", 3],
        }
        for key, values in edits.items():
            for value in values:  # type: ignore[attr-defined]

                def edit(m: dict, k: int = k, key: str = key, value: object = value) -> None:
                    m["tensors"][k][key] = value

                yield f"tensor {k} {key}={value!r}"[:80], _edit_manifest(blob, edit)
                if key in ("shape", "dtype"):  # and nbytes made to agree

                    def agree(m: dict, edit: Callable = edit, k: int = k) -> None:
                        edit(m)
                        t = m["tensors"][k]
                        with contextlib.suppress(TypeError, ValueError):
                            t["nbytes"] = int(np.prod(t["shape"])) * np.dtype(t["dtype"]).itemsize

                    yield (
                        f"tensor {k} {key}={value!r} with nbytes"[:80],
                        _edit_manifest(blob, agree),
                    )
    source = original["source"]
    top: dict[str, list[object]] = {
        "source": [{**source, "sha256": "0" * 64}, {**source, "size": source["size"] + 1},
                   {**source, "size": 10**15}, {**source, "size": -1}, {}],
        "identical": [False, 1, "true"],
        "format": ["npy", "npz", "safetensors", "raw", "torch", "zip"],
        "chunk_bytes": [original["chunk_bytes"] + 1, original["chunk_bytes"] * 2,
                        original["chunk_bytes"] // 2, 1, 2**40, 0, "1024"],
        "lmgc_archive": [1, 2, 3, 4],
        "tensors": [tensors[::-1], tensors[1:] + tensors[:1], tensors[:-1]],
        "segments": [original["segments"][::-1], original["segments"][:-1],
                     original["segments"] + original["segments"][-1:]],
        "metadata": [{"x": "\x1b[2J"}, [1], None],
        "notes": [["\x1b[2J\r"], "abc", 5],
        "members": [original.get("members", [])[::-1], []],
        "base": [None, {"name": "x", "size": 1, "sha256": "0" * 64}, "x"],
    }  # fmt: skip
    for key, values in top.items():
        for value in values:

            def edit(m: dict, key: str = key, value: object = value) -> None:
                m[key] = value

            label = f"{key}={value!r}"[:80]
            if key == "format" and value != original["format"]:
                label = f"format={value!r}"
            yield label, _edit_manifest(blob, edit)
    yield "a literal byte", _edit_manifest(blob, _flip_literal)

    def different(m: dict) -> None:
        _flip_literal(m)
        m["identical"] = False

    yield "identical=False and a literal byte", _edit_manifest(blob, different)
    yield "manifest dropped (a zip of streams)", rezip(blob, lambda items: items[:-1])


def header_edits(blob: bytes) -> Iterator[tuple[str, bytes]]:
    """A compact stream's header (its ``file`` record, its array) edited, the header CRC
    recomputed (``container.pack``)."""
    if blob[:4] != container.MAGIC:
        return
    header, offset = container.read_header(blob)
    record = header["file"]
    if record == {"format": "raw"}:
        yield from _raw_header_edits(header, blob[offset:])
        return
    head = record["head"]
    shape = str(tuple(header["array"]["shape"]))
    heads = {
        "descr >f4": head.replace("'<f4'", "'>f4'"),
        "descr <i4": head.replace("'<f4'", "'<i4'"),
        "fortran flipped": head.replace("True", "Fals_").replace("False", "True")
        .replace("Fals_", "False"),
        "shape (30, 20) <-> (20, 30)": head.replace("(20, 30)", "(3_, 2_)")
        .replace("(30, 20)", "(20, 30)").replace("(3_, 2_)", "(30, 20)"),
        "shape flat": head.replace("(20, 30)", "(600,)").replace("(30, 20)", "(600,)"),
        "shape smaller": head.replace("(20, 30)", "(20, 29)").replace("(30, 20)", "(30, 19)"),
        "shape larger": head.replace("(20, 30)", "(2000000, 30)"),
        "npy version 2": head.replace("\x01\x00", "\x02\x00", 1),
        "a byte after the header": head + "x",
        "header cut": head[:-2],
        "no newline": head[:-1] + " ",
        "not latin-1": head[:-2] + "\u0100\n",
    }  # fmt: skip
    edits: dict[str, Callable[[dict], None]] = {
        f"file head: {k}": (lambda h, v=v: h["file"].__setitem__("head", v))
        for k, v in heads.items()
    }
    edits.update({
        "file record raw": lambda h: h.__setitem__("file", {"format": "raw"}),
        "file record dropped": lambda h: h.pop("file"),
        "file record npz": lambda h: h.__setitem__("file", {"format": "npz", "head": head}),
        "file record a list": lambda h: h.__setitem__("file", [record]),
        "file record with one more key": lambda h: h["file"].__setitem__("size", 1),
        "file head a number": lambda h: h["file"].__setitem__("head", 5),
        "array shape reversed": lambda h: h["array"].__setitem__("shape", [30, 20]),
        "array shape flat": lambda h: h["array"].__setitem__("shape", [600]),
        "array dtype": lambda h: h["array"].__setitem__("dtype", "<i4"),
        "array sha256": lambda h: h["array"].__setitem__("sha256", "0" * 64),
        "view note": lambda h: h.__setitem__("view", {"dtype": "<i4"}),
    })  # fmt: skip
    assert shape in ("(20, 30)", "(30, 20)"), shape
    for label, edit in edits.items():
        changed = json.loads(json.dumps(header))
        edit(changed)
        yield label, container.pack(changed, []) + blob[offset:]


def _raw_header_edits(header: dict, blocks: bytes) -> Iterator[tuple[str, bytes]]:
    """A raw file's record (``{"format": "raw"}``) edited, the header CRC recomputed."""
    shape = tuple(header["array"]["shape"])
    npy_head = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        npy_head, {"descr": "<f4", "fortran_order": False, "shape": shape}
    )
    records: dict[str, object] = {
        "file record npy": {"format": "npy", "head": npy_head.getvalue().decode("latin-1")},
        "file record npy of another shape": {"format": "npy", "head": npy_head.getvalue()
                                             .decode("latin-1").replace(str(shape), "(3,)")},
        "file record dropped": None,
        "file record raw with a head": {"format": "raw", "head": ""},
        "file record safetensors": {"format": "safetensors"},
        "file record empty": {},
        "file record a string": "raw",
    }  # fmt: skip
    for label, record in records.items():
        changed = {**header, "file": record}
        if record is None:
            del changed["file"]
        yield label, container.pack(changed, []) + blocks
    for label, key, value in [("array dtype", "dtype", "<i4"), ("array shape", "shape", [1]),
                              ("array shape 2-D", "shape", [*shape, 1])]:  # fmt: skip
        yield (
            label,
            container.pack({**header, "array": {**header["array"], key: value}}, []) + (blocks),
        )


# -- running ---------------------------------------------------------------------------------


@dataclass
class Outcome:
    status: int
    stderr: str
    output: bytes | None
    problem: str | None


class Runner:
    """Runs ``lmgc decompress`` on damaged copies of one seed and tallies what happened."""

    def __init__(self, tmp: Path, seed: Seed) -> None:
        self.tmp, self.seed = tmp, seed
        self.path = tmp / "case.lmgc"
        self.out = tmp / f"out{seed.suffix}"
        self.tally: Counter[str] = Counter()
        self.failures: list[str] = []
        self.k = 0

    def decompress(self, blob: bytes, jobs: int, force: bool = False) -> Outcome:
        self.path.write_bytes(blob)
        self.out.unlink(missing_ok=True)
        args = ["decompress", str(self.path), "-o", str(self.out), "-q", "-j", str(jobs)]
        result = CliRunner().invoke(
            cli, [*args, *self.seed.extra, *(["-f"] if force else [])], env=DEBUG
        )
        problem = None
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            problem = repr(result.exception)
        output = self.out.read_bytes() if self.out.exists() else None
        return Outcome(result.exit_code, result.stderr, output, problem)

    def check(self, label: str, blob: bytes, may_differ: bool = False) -> None:
        """Decompress ``blob`` (one thread and two, alternately; now and then with ``-f``),
        and now and then list it, and record anything that is not exact-or-refused."""
        self.k += 1
        jobs = 1 + self.k % 2
        got = self.decompress(blob, jobs, force=self.k % 7 == 0)
        where = f"{self.seed.name}: {label} (-j {jobs})"
        if got.problem is not None:
            self.failures.append(f"{where}: unexpected exception {got.problem}")
        elif got.status == 0:
            if got.output == self.seed.original:
                self.tally["exact"] += 1
            elif may_differ:
                self.tally["another valid archive"] += 1
            else:
                size = None if got.output is None else len(got.output)
                self.failures.append(f"{where}: SILENT WRONG OUTPUT, exit 0 ({size} bytes)")
        else:
            self.tally["refused"] += 1
            lines = got.stderr.strip().splitlines()
            usage = got.status == 2 and "--base" in got.stderr  # a base other than recorded
            if (
                not (got.status == 1 or usage)
                or len(lines) != 1
                or not lines[0].startswith("error: ")
            ):
                self.failures.append(f"{where}: status {got.status}, stderr {got.stderr!r}")
            if got.output is not None or list(self.tmp.glob("*.part")):
                self.failures.append(f"{where}: a failed run left output behind")
        if self.k % 6 == 0:
            self.listing(where)

    def listing(self, where: str) -> None:
        for command in (["ls"], ["info"], ["info", "--json"]):
            result = CliRunner().invoke(cli, [*command, str(self.path)], env=DEBUG)
            if result.exception is not None and not isinstance(result.exception, SystemExit):
                self.failures.append(f"{where}: {command} raised {result.exception!r}")
            elif result.exit_code not in (0, 1) or "Traceback" in result.stderr:
                self.failures.append(f"{where}: {command} status {result.exit_code}")
            elif result.exit_code == 1 and not result.stderr.startswith("error: "):
                self.failures.append(f"{where}: {command} said {result.stderr!r}")


def _run(tmp: Path, seed: Seed, cases: Iterator[tuple[str, bytes]]) -> Counter[str]:
    runner = Runner(tmp, seed)
    for label, blob in cases:
        runner.check(label, blob, may_differ=label.startswith(DIFFERENT_ARCHIVE))
    assert not runner.failures, f"{len(runner.failures)} failures:\n" + "\n".join(
        runner.failures[:40]
    )
    return runner.tally


SEEDS = ["safetensors", "safetensors-l2", "npz", "npz-deflated", "npy-compact",
         "npy-compact-l2", "npy-zip", "npy-fortran", "raw-compact", "base", "torch"]  # fmt: skip


@pytest.mark.parametrize("name", SEEDS)
def test_damaged_bytes_truncation_and_garbage(seeds, tmp_path, name):
    """Every byte of the structure changed, member data sampled, cut at many offsets, garbage
    at either end: exact output or one clean error, on one thread and two."""
    seed = seeds[name]
    rng = random.Random(f"{RNG_SEED}-{name}")

    def cases() -> Iterator[tuple[str, bytes]]:
        yield "untouched", seed.archive
        yield from byte_changes(rng, seed.archive)
        yield from truncations(seed.archive)
        yield from garbage(rng, seed.archive)

    tally = _run(tmp_path, seed, cases())
    assert tally["exact"] >= 1 and tally["refused"] > len(seed.archive) // TRUNCATE_STEP


@pytest.mark.slow
@pytest.mark.parametrize("name", SEEDS)
def test_every_structure_byte_changed(seeds, tmp_path, name):
    """As above, every byte of the zip structure (or of a compact stream's header)."""
    seed = seeds[name]
    tally = _run(tmp_path, seed, byte_changes(random.Random(name), seed.archive, every=True))
    assert tally["refused"] > 0


@pytest.mark.parametrize("name", SEEDS)
def test_members_rearranged_and_fields_edited(seeds, tmp_path, name):
    """Valid zips (or stream headers) with their CRCs recomputed around one change: members
    swapped, duplicated, dropped, renamed; one manifest field edited; a compact stream's
    ``file`` record or array edited."""
    seed = seeds[name]

    def cases() -> Iterator[tuple[str, bytes]]:
        yield from member_surgery(seed.archive)
        yield from manifest_edits(seed.archive)
        yield from header_edits(seed.archive)

    tally = _run(tmp_path, seed, cases())
    assert tally["refused"] > 5, tally


def test_a_zip_of_streams_that_lost_its_manifest_is_refused(seeds, tmp_path):
    """An archive whose manifest is gone — cut off (it is the last member) and the zip then
    "repaired", or left out by a tool rewriting the zip — must not pass for one written before
    manifests existed (which held only stream format 1): decoded as one, it lost the source's
    format and bytes, split chunked tensors into several, and wrote an ``.npz`` under a
    ``.pt`` name, all with exit status 0."""
    for name in ("safetensors", "torch", "base"):
        seed = seeds[name]
        runner = Runner(tmp_path, seed)
        lost = rezip(seed.archive, lambda items: items[:-1])
        for jobs in (1, 2):
            got = runner.decompress(lost, jobs)
            assert got.problem is None and got.status == 1, (name, got)
            assert "without a manifest" in got.stderr and got.output is None, got.stderr


def test_through_the_real_executable(seeds, tmp_path):
    """A few damaged archives through the installed ``lmgc``: status 1, one ``error:`` line,
    no traceback and nothing left at the output path; the undamaged one restores exactly."""
    exe = shutil.which("lmgc") or str(Path(sys.executable).parent / "lmgc")
    for name in ("safetensors", "npy-compact", "base"):
        seed = seeds[name]
        rng = random.Random(f"{RNG_SEED}-exe-{name}")
        structure, data = regions(seed.archive)
        cases = [("untouched", seed.archive), ("cut", seed.archive[: len(seed.archive) // 2])]
        for p in (rng.choice(structure), rng.choice(data)):
            blob = bytearray(seed.archive)
            blob[p] ^= 0x5A
            cases.append((f"byte {p}", bytes(blob)))
        for label, blob in cases:
            path, out = tmp_path / f"{name}.lmgc", tmp_path / f"{name}{seed.suffix}"
            path.write_bytes(blob)
            out.unlink(missing_ok=True)
            for jobs in ("1", "2"):
                args = [exe, "decompress", str(path), "-o", str(out), "-q", "-j", jobs, "-f"]
                proc = subprocess.run([*args, *seed.extra], capture_output=True, timeout=120)
                where = f"{name}: {label} -j {jobs}: {proc.stderr!r}"
                if label == "untouched":
                    assert proc.returncode == 0 and out.read_bytes() == seed.original, where
                    continue
                lines = proc.stderr.decode().strip().splitlines()
                assert proc.returncode == 1 and len(lines) == 1, where
                assert lines[0].startswith("error: ") and b"Traceback" not in proc.stderr, where
                assert not out.exists() and not list(tmp_path.glob("*.part")), where


@pytest.mark.parametrize("damage", ["byte", "cut"])
def test_a_damaged_archive_in_a_folder(tmp_path, grads, damage):
    """``lmgc decompress DIR -o OUT`` with one damaged archive among others: one error line
    naming that file, and no half-restored folder left (the archives before it decoded fine;
    an unrelated file of an existing OUT stays)."""
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    np.save(src / "a.npy", grads[:500])
    np.save(src / "sub" / "b.npy", grads[500:1500].reshape(10, 100))
    np.save(src / "z.npy", grads[1500:1600])
    (src / "readme.txt").write_text("hi")
    ok = CliRunner().invoke(cli, ["compress", str(src), "-o", str(tmp_path / "enc"), "-q"])
    assert ok.exit_code == 0, ok.stderr
    damaged = tmp_path / "enc" / "sub" / "b.npy.lmgc"
    blob = bytearray(damaged.read_bytes())
    if damage == "byte":
        blob[-10] ^= 0x21
    else:
        del blob[len(blob) // 2 :]
    damaged.write_bytes(bytes(blob))
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "mine.txt").write_text("keep")
    for out, extra in [(tmp_path / "dec", []), (tmp_path / "busy", ["-f"])]:
        for jobs in ("1", "2"):
            args = ["decompress", str(tmp_path / "enc"), "-o", str(out), "-q", "-j", jobs]
            result = CliRunner().invoke(cli, [*args, *extra], env=DEBUG)
            assert result.exit_code == 1 and not isinstance(result.exception, AssertionError)
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
            assert "b.npy.lmgc" in lines[0], lines[0]
    assert not (tmp_path / "dec").exists()
    assert [p.name for p in (tmp_path / "busy").rglob("*")] == ["mine.txt"]


@pytest.mark.parametrize("level", [1, 2])
@pytest.mark.parametrize("dtype", ["<i4", "<u4", ">f4", ">i4"])
def test_a_stream_whose_array_dtype_was_edited_is_refused(grads, level, dtype):
    """A stream without stages whose header's array dtype is not its part's (the header CRC
    recomputed): decoding used to cast the part's values into the array's dtype -- float32
    gradients came back as int32 zeros with exit 0, every block's checksum right -- from a bare
    stream, a raw file's compact form (``lmgc decompress``) or a Zarr chunk alike."""
    from lmgc_core import Pipeline, decompress
    from lmgc_core.util.errors import StreamError

    blob = Pipeline.from_config({"prior": {"name": "float", "level": level}}).compress(grads[:700])
    header, offset = container.read_header(blob)
    edited = {**header, "array": {**header["array"], "dtype": dtype}}
    with pytest.raises(StreamError, match="header declares parts"):
        decompress(container.pack(edited, []) + blob[offset:])


@pytest.mark.rss
@pytest.mark.parametrize("form", ["npy", "raw", "one block"])
def test_a_compact_stream_declaring_gigabytes(seeds, tmp_path, form):
    """A 2 KB compact stream whose record, array and part all declare 24 GB (made consistent,
    header CRC recomputed): refused before anything that size is allocated, in bounded memory
    and time, on one thread and two. ``one block``: 1 GiB in one block of 2**28 values (the
    largest ``block_values`` a header may set), which passes the block count: its level-2
    decoder stops once its values outrun the block's bytes (it used to decode all 2**28 values
    and set ~512 MB of scratch first: ~1.6 GB and 3-16 s before the checksum failed)."""
    from tests.files.test_archive_integrity import refused_in_bounds

    seed = seeds["npy-compact" if form != "raw" else "raw-compact"]
    header, offset = container.read_header(seed.archive)
    rows = 200_000_000 if form != "one block" else 1 << 23
    shape = [rows, 30] if form == "npy" else [rows * 30]
    if form == "one block":
        shape = [1 << 28]
        for config in (header["pipeline"]["prior"], header["prior"]):
            config["block_values"] = 1 << 28
    edited = json.loads(json.dumps(header))
    edited["array"]["shape"] = shape
    edited["parts"][0]["count"] = math.prod(shape)
    if isinstance(edited["parts"][0].get("array"), dict):
        edited["parts"][0]["array"]["shape"] = shape
    if form != "raw":
        head = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            head, {"descr": "<f4", "fortran_order": False, "shape": tuple(shape)}
        )
        edited["file"]["head"] = head.getvalue().decode("latin-1")
    path = tmp_path / "big.lmgc"
    path.write_bytes(container.pack(edited, []) + seed.archive[offset:])
    for jobs in ("1", "2"):
        out = tmp_path / f"big{seed.suffix}"
        message = refused_in_bounds("decompress", path, "-o", out, "-j", jobs)
        if form == "one block":
            assert "past the end of its coded bytes" in message, message
        else:
            assert "blocks where the shape needs" in message or "space" in message, message
        assert not out.exists()


@pytest.mark.parametrize("size", [3, 5, 6, 16])
def test_opaque_items_of_any_size_round_trip(tmp_path, size):
    """An ``.npy`` / ``.npz`` of ``|V3`` (``|V5``, ``|V6``, ``|V16``) items: ``lmgc compress``
    failed with an unexpected ``TypeError`` (the prior asked numpy for a ``u3`` view); they are
    coded as their bytes now, like ``|S3``, and come back byte for byte. ``lmgc_core.compress``
    refuses them with a ``ConfigError`` (they need the CLI's or the codecs' byte view)."""
    from lmgc_core import compress
    from lmgc_core.util.errors import ConfigError

    items = np.frombuffer(random.Random(size).randbytes(12 * size), dtype=f"V{size}")
    np.save(tmp_path / "v.npy", items.reshape(3, 4))
    np.savez(tmp_path / "v.npz", v=items, f=np.arange(3.0))
    for name, extra in [("v.npy", []), ("v.npz", ["--chunk-size", "1024"])]:
        src = tmp_path / name
        for command in (["compress", src, "-q", "-f", *extra], ["decompress", f"{src}.lmgc",
                        "-o", tmp_path / f"back-{name}", "-q", "-j", "2"]):  # fmt: skip
            result = CliRunner().invoke(cli, [str(a) for a in command], env=DEBUG)
            assert result.exit_code == 0, (command, result.stderr, result.exception)
        assert (tmp_path / f"back-{name}").read_bytes() == src.read_bytes()
    with pytest.raises(ConfigError, match="directly"):
        compress(items)


def test_a_deflated_segment_without_a_tensor_is_refused(seeds, tmp_path):
    """400,000 empty deflated segments in a 22 KB archive each set up a zlib compressor (20 s)
    before any check failed; an .npz member's deflated segment always holds its array."""
    from tests.cli_helpers import lmgc, one_error_line

    blob = seeds["npz-deflated"].archive

    def edit(manifest: dict) -> None:
        manifest["segments"] += [["deflated", 9, []]] * 3

    (tmp_path / "x.npz.lmgc").write_bytes(_edit_manifest(blob, edit))
    message = one_error_line(lmgc("decompress", tmp_path / "x.npz.lmgc", ok=False), 1)
    assert "a deflated segment holds no tensor" in message
