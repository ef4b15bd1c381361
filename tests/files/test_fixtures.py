"""Format stability: committed streams and archives of every format version decode with today's
code, bit-exact (docs/compatibility.md).

``tests/fixtures/<dir>/index.json`` lists each fixture with the commit and format version that
wrote it and the SHA-256 of what it must decode to. Fixtures are decoded, never re-encoded to be
compared with themselves. Two guards keep the set honest:

* the current format versions must have fixtures, and today's code must re-encode their inputs
  into the very same bytes (only ``made_by`` may differ): an intentional format change without
  new fixtures fails, and so does an unintended change of the bytes;
* every fixture file's SHA-256 is in its index: a fixture is never edited or regenerated.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import shutil
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
from lmgc_float.fast import FAST_VERSION

import lmgc_core
from lmgc_core import MismatchError
from lmgc_core.files import archive
from lmgc_core.stream import container
from lmgc_core.util.errors import ChecksumError, PluginError
from tests.cli_helpers import lmgc
from tests.paths import ROOT_DIR, TESTS_DIR

ROOT = ROOT_DIR
FIXTURES = TESTS_DIR / "fixtures"


def _generator() -> Any:
    """``scripts/make_fixtures.py``: the inputs and encoders of the fixtures."""
    name = "lmgc_make_fixtures"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / "make_fixtures.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


gen = _generator()


def _indexes() -> dict[str, dict[str, Any]]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(FIXTURES.glob("*/index.json"))}


INDEXES = _indexes()
ENTRIES = [
    pytest.param(d, f, e, id=f"{d}/{f}", marks=[pytest.mark.lm] if e["lm"] else [])
    for d, index in INDEXES.items()
    for f, e in index["files"].items()
]
STREAMS = [p for p in ENTRIES if INDEXES[p.values[0]]["kind"] == "stream"]
ARCHIVES = [p for p in ENTRIES if INDEXES[p.values[0]]["kind"] == "archive"]
BASED_STREAMS = [p for p in STREAMS if "base" in p.values[2]]
BASED_ARCHIVES = [p for p in ARCHIVES if "base" in p.values[2]]
"""Fixtures coded against a base (``Pipeline.compress(x, base=)``, ``lmgc compress --base`` or
``--series``): the base is committed beside them (an array, a file, or the series' first
archive), listed in the entry's ``base`` with its size and SHA-256."""


def _is_current(index: dict[str, Any]) -> bool:
    """Made by these versions: the stream (and archive) format and the fast level's blocks
    (a directory from before ``fast_version`` was recorded holds version 3's)."""
    if index.get("fast_version", 3) != FAST_VERSION:
        return False
    if index["kind"] == "stream":
        return index["version"] == container.VERSION
    return index["version"] == archive.ARCHIVE_VERSION and (
        index["stream_version"] == container.VERSION
    )


CURRENT = [p for p in ENTRIES if _is_current(INDEXES[p.values[0]]) and not p.values[2]["lm"]]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- never edited


@pytest.mark.parametrize("name", sorted(INDEXES))
def test_fixture_files_are_exactly_those_indexed_and_unedited(name):
    index, folder = INDEXES[name], FIXTURES / name
    assert index["kind"] in ("stream", "archive") and index["files"], name
    on_disk = {p.name for p in folder.iterdir()} - {gen.INDEX}
    bases = {e["base"]["file"]: e["base"] for e in index["files"].values() if "base" in e}
    assert on_disk == set(index["files"]) | set(bases), f"{name}: files and index differ"
    for file, entry in {**index["files"], **bases}.items():
        data = (folder / file).read_bytes()
        assert (len(data), _sha(data)) == (entry["size"], entry["file_sha256"]), (
            f"{name}/{file} changed: fixtures are never edited or regenerated "
            "(docs/compatibility.md); add a new directory with scripts/make_fixtures.py"
        )


def test_every_stream_and_archive_version_has_fixtures():
    """Versions 1..current of both formats each have a fixture directory."""
    have = {(i["kind"], i["version"]) for i in INDEXES.values()}
    for kind, current in (("stream", container.VERSION), ("archive", archive.ARCHIVE_VERSION)):
        for version in range(1, current + 1):
            assert (kind, version) in have, (
                f"{kind} format version {version} has no committed fixtures: "
                f"run scripts/make_fixtures.py {kind}"
            )


# ------------------------------------------------------------------------------- decoding


@pytest.mark.parametrize(("folder", "file", "entry"), STREAMS)
def test_stream_fixture_decodes_bit_exact(folder, file, entry):
    blob = (FIXTURES / folder / file).read_bytes()
    if entry["lm"]:
        try:
            arr = gen.decode_stream(entry["decode"], blob)
        except MismatchError as exc:  # another model file, llama.cpp build or machine
            assert "differ" in str(exc) or "mismatch" in str(exc).lower(), exc
            pytest.skip(f"LM fixture is bound to its model and backend: {exc}")
        except PluginError as exc:  # llama-cpp-python or the model is not installed
            pytest.skip(f"LM fixture needs its prior: {exc}")
        except ChecksumError:
            if _records_vendor(blob) or _cpu_vendor() == LM_FIXTURES_VENDOR:
                raise
            pytest.skip(
                f"LM fixture from before cpu_vendor was recorded, written on a "
                f"{LM_FIXTURES_VENDOR} CPU: refused by its SHA-256 on {_cpu_vendor()}"
            )
    else:
        arr = gen.decode_stream(entry["decode"], blob, _stream_base(folder, entry))
    assert gen.describe(arr) == entry["expected"], f"{folder}/{file} ({entry['what']})"


PLAIN_STREAMS = [
    p for p in STREAMS if not p.values[2]["lm"] and p.values[2]["decode"] != "numcodecs"
]


@pytest.mark.parametrize(("folder", "file", "entry"), PLAIN_STREAMS)
def test_stream_fixture_decodes_the_same_with_force(folder, file, entry):
    """``force`` only lets a mismatch through: with it, an old adaptive stream (log-domain
    scores, which the prior's for_stream picks) failed its checksum."""
    import lmgc_core

    blob = (FIXTURES / folder / file).read_bytes()
    arr = lmgc_core.decompress(blob, force=True, base=_stream_base(folder, entry))
    assert gen.describe(arr) == entry["expected"], f"{folder}/{file} ({entry['what']})"


LM_FIXTURES_VENDOR = "GenuineIntel"
"""Where every committed LM fixture that records no ``cpu_vendor`` was written (the project's
Intel Xeon VM). Elsewhere torch's matrix products round differently (an AMD EPYC with the same
AVX512 kernels), and such a stream cannot say so before decoding: its SHA-256 refuses it."""


def _records_vendor(blob: bytes) -> bool:
    header, _ = container.read_header(blob)
    return "cpu_vendor" in json.dumps(header)


def _cpu_vendor() -> str | None:
    from lmgc_transformers import cpu

    return cpu.vendor()


def _stream_base(folder: str, entry: dict[str, Any]) -> Any:
    """The committed base of a stream coded against one (``None`` for the others)."""
    if "base" not in entry:
        return None
    base = gen.load_base_array(FIXTURES / folder / entry["base"]["file"], entry["base"])
    assert gen.describe(base) == entry["base"]["array"], f"{folder}: {entry['base']['file']}"
    return base


@pytest.mark.parametrize(("folder", "file", "entry"), BASED_STREAMS)
def test_stream_fixture_refuses_a_missing_or_other_base(folder, file, entry):
    """A delta stream needs its very base: without it, or with one value of it changed, the
    decoder refuses with MismatchError naming the recorded base, before decoding anything."""
    import numpy as np

    blob = (FIXTURES / folder / file).read_bytes()
    name = entry["base"]["name"]
    with pytest.raises(MismatchError, match="base") as missing:
        lmgc_core.decompress(blob)
    if name is not None:
        assert repr(name) in str(missing.value) or name in str(missing.value)
    other = _stream_base(folder, entry).copy()
    bits = other.reshape(-1).view(f"u{other.dtype.itemsize}")
    bits[-1] ^= 1  # the last value one ulp off (its lowest bit)
    with pytest.raises(MismatchError, match="base"):
        lmgc_core.decompress(blob, base=other)
    with pytest.raises(MismatchError):  # another shape
        lmgc_core.decompress(blob, base=np.zeros(3, other.dtype))


def _series_first(folder: str, entry: dict[str, Any], where: Path) -> Path:
    """The committed first archive of a ``--series`` fixture, named as ``lmgc compress`` named
    it, in ``where``."""
    first = where / f"{entry['base']['archive_of']}.lmgc"
    shutil.copyfile(FIXTURES / folder / entry["base"]["file"], first)
    return first


def _archive_base(folder: str, entry: dict[str, Any], where: Path) -> Path:
    """The base file an archive fixture decodes with: the committed file (``--base``), or what
    the series' first archive decompresses to (``--series``)."""
    base = entry["base"]
    if "archive_of" not in base:
        return FIXTURES / folder / base["file"]
    where.mkdir(exist_ok=True)
    lmgc("decompress", _series_first(folder, entry, where), "-q")
    out = where / base["archive_of"]
    assert {"sha256": _sha(out.read_bytes()), "size": out.stat().st_size} == base["source"]
    return out


@pytest.mark.parametrize(("folder", "file", "entry"), ARCHIVES)
def test_archive_fixture_decompresses_to_its_source(folder, file, entry, tmp_path):
    packed = tmp_path / f"{entry['source_name']}.lmgc"
    shutil.copyfile(FIXTURES / folder / file, packed)
    if "archive_of" in entry.get("base", {}):  # a series: both in one command, in order
        lmgc("decompress", _series_first(folder, entry, tmp_path), packed, "-q")
        first = (tmp_path / entry["base"]["archive_of"]).read_bytes()
        assert {"sha256": _sha(first), "size": len(first)} == entry["base"]["source"]
    elif "base" in entry:
        lmgc("decompress", packed, "-q", "--base", _archive_base(folder, entry, tmp_path))
    else:
        lmgc("decompress", packed, "-q")
    out = tmp_path / entry["source_name"]
    data = out.read_bytes()
    if "tensors" in entry["expected"]:  # no manifest: the output is a conversion, check tensors
        got, want = _tensors_in(out), entry["expected"]["tensors"]
        assert got.keys() == want.keys(), f"{folder}/{file}"
        for name, seen in got.items():  # a raw file knows only its bytes
            assert seen == {k: want[name][k] for k in seen}, f"{folder}/{file}: {name!r}"
    else:
        assert {"sha256": _sha(data), "size": len(data)} == entry["expected"], f"{folder}/{file}"


@pytest.mark.parametrize(("folder", "file", "entry"), BASED_ARCHIVES)
def test_archive_fixture_refuses_a_missing_or_other_base(folder, file, entry, tmp_path):
    """Without its base, or with another file, ``lmgc decompress`` refuses with one error line
    naming the recorded base (exit status 2) and writes nothing."""
    from tests.cli_helpers import one_error_line

    packed = tmp_path / f"{entry['source_name']}.lmgc"
    shutil.copyfile(FIXTURES / folder / file, packed)
    out = tmp_path / entry["source_name"]
    recorded = entry["base"].get("archive_of") or entry["base"]["name"]
    line = one_error_line(lmgc("decompress", packed, "-q", ok=False), 2)
    assert recorded in line and "--base" in line, line
    other = tmp_path / "other" / recorded
    other.parent.mkdir()
    data = bytearray(_archive_base(folder, entry, tmp_path / "base").read_bytes())
    data[-1] ^= 1  # the base's last byte changed
    other.write_bytes(bytes(data))
    line = one_error_line(lmgc("decompress", packed, "-q", "--base", other, ok=False), 2)
    assert "is not the base" in line and recorded in line, line
    assert not out.exists()


def _member_base(folder: str, entry: dict[str, Any], zf: zipfile.ZipFile, where: Path) -> Any:
    """``header -> base chunk`` for the members of an archive coded against a base (as
    ``lmgc decompress --base`` finds them), or ``None``."""
    if "base" not in entry:
        return None
    from lmgc_core.files.base_file import BaseFile, base_for_header

    manifest = json.loads(zf.read(archive.MANIFEST))
    path = _archive_base(folder, entry, where)
    reference = BaseFile(io.BytesIO(path.read_bytes()), path.name)
    return lambda header: base_for_header(reference, header, manifest["chunk_bytes"])


@pytest.mark.parametrize(("folder", "file", "entry"), ARCHIVES)
def test_archive_fixture_members_decode_alone(folder, file, entry, tmp_path):
    """Every stream member of an archive decodes with lmgc_core.decompress on its own (a member
    coded against a base: with its base chunk, and refused by name without it)."""
    blob = (FIXTURES / folder / file).read_bytes()
    if not zipfile.is_zipfile(FIXTURES / folder / file):  # a bare stream (one nameless tensor)
        arrays = {"": gen.describe(lmgc_core.decompress(blob))}
    else:
        with zipfile.ZipFile(FIXTURES / folder / file) as zf:
            names = [n for n in zf.namelist() if n != archive.MANIFEST]
            assert names, f"{folder}/{file}: no members"
            bases = _member_base(folder, entry, zf, tmp_path)
            arrays, against = {}, 0
            for n in names:
                member = zf.read(n)
                header = container.read_header(member)[0]
                base = None if bases is None else bases(header)
                if base is not None:
                    against += 1
                    with pytest.raises(MismatchError, match=header["base"]["name"]):
                        lmgc_core.decompress(member)
                arrays[n.removesuffix(".lmgc")] = gen.describe(
                    lmgc_core.decompress(member, base=base)
                    if base is not None
                    else lmgc_core.decompress(member)
                )
            assert bases is None or against, f"{folder}/{file}: no member coded against the base"
    if "tensors" in entry["expected"]:
        assert arrays == entry["expected"]["tensors"], f"{folder}/{file}"


_SAFETENSORS_DTYPES = {
    "BF16": "bfloat16",
    "F16": "<f2",
    "F32": "<f4",
    "F64": "<f8",
    "I64": "<i8",
    "I32": "<i4",
    "U8": "|u1",
}


def _tensors_in(path: Path) -> dict[str, Any]:
    """The tensors of a decompressed .npy / .npz / .safetensors / raw file, as ``describe``
    gives them (a raw file: the bytes of its one nameless tensor)."""
    import numpy as np

    data = path.read_bytes()
    if path.suffix == ".npy":
        return {"": gen.describe(np.load(path))}
    if path.suffix == ".npz":
        with np.load(path) as npz:
            return {k: gen.describe(npz[k]) for k in npz.files}
    if path.suffix == ".safetensors":
        n = int.from_bytes(data[:8], "little")
        header, body = json.loads(data[8 : 8 + n]), data[8 + n :]
        header.pop("__metadata__", None)
        return {
            name: {
                "sha256": _sha(body[t["data_offsets"][0] : t["data_offsets"][1]]),
                "dtype": _SAFETENSORS_DTYPES[t["dtype"]],
                "shape": t["shape"],
                "order": "C",
            }
            for name, t in header.items()
        }
    return {"": {"sha256": _sha(data)}}


# ------------------------------------------------------------- guard: the current versions


def test_current_versions_have_fixtures():
    for kind, version in (("stream", container.VERSION), ("archive", archive.ARCHIVE_VERSION)):
        current = [i for i in INDEXES.values() if i["kind"] == kind and _is_current(i)]
        extra = "" if kind == "stream" else f" with stream version {container.VERSION}"
        assert current, (
            f"{kind} format version {version}{extra} has no committed fixtures: "
            f"run scripts/make_fixtures.py {kind} (docs/compatibility.md)"
        )


def test_every_case_has_a_fixture_of_the_current_versions():
    """A component or option added to scripts/make_fixtures.py needs its fixture too (written
    into a new directory: ``--only CASE --out tests/fixtures/<kind>-v<N>-<what>``)."""
    for kind, cases in (("stream", gen.STREAM_CASES), ("archive", gen.ARCHIVE_CASES)):
        have = {
            e["case"]
            for i in INDEXES.values()
            if i["kind"] == kind and _is_current(i)
            for e in i["files"].values()
        }
        missing = sorted({c.name for c in cases} - have)
        assert not missing, (
            f"{kind} cases {missing} have no fixture of the current format version: run "
            f"scripts/make_fixtures.py {kind} --only {' '.join(missing)} --out <new directory>"
        )


def _made_by_free(new: bytes, old: bytes, what: str) -> None:
    """``new`` is ``old`` except, at most, the header's ``made_by`` (a version string)."""
    if new == old:
        return
    assert new[:5] == old[:5], f"{what}: magic/version byte changed"
    (h_new, at_new), (h_old, at_old) = container.read_header(new), container.read_header(old)
    h_new.pop("made_by", None)
    h_old.pop("made_by", None)
    changed = sorted(k for k in h_new.keys() | h_old.keys() if h_new.get(k) != h_old.get(k))
    assert not changed, f"{what}: header keys {changed} changed without a new format version"
    assert new[at_new:] == old[at_old:], f"{what}: coded blocks changed without a new version"


def _manifest(z: zipfile.ZipFile, what: str) -> dict[str, Any]:
    """The manifest, with its ``members`` list (archive version 2: name, size and CRC-32 of each
    stream member) cut to the names once the sizes and CRCs are checked against the zip: a
    member's size follows its ``made_by``, which is free to change."""
    manifest = json.loads(z.read(archive.MANIFEST))
    if isinstance(manifest.get("members"), list):
        infos = {i.filename: i for i in z.infolist()}
        for name, size, crc in manifest["members"]:
            assert (infos[name].file_size, infos[name].CRC) == (size, crc), f"{what}: {name}"
        manifest["members"] = [m[0] for m in manifest["members"]]
    return manifest


_ZIP_FIELDS = ("date_time", "compress_type", "external_attr", "extra", "comment", "flag_bits")


def _same_archive(new: bytes, old: bytes, what: str) -> None:
    if new == old:
        return
    if not old.startswith(b"PK"):  # the compact form of a single array: one stream
        _made_by_free(new, old, what)
        return
    import io

    with zipfile.ZipFile(io.BytesIO(new)) as zn, zipfile.ZipFile(io.BytesIO(old)) as zo:
        names = [i.filename for i in zn.infolist()]
        assert names == [i.filename for i in zo.infolist()], f"{what}: members changed"
        for a, b in zip(zn.infolist(), zo.infolist(), strict=True):
            for attr in _ZIP_FIELDS:
                assert getattr(a, attr) == getattr(b, attr), f"{what}: {a.filename} {attr}"
            if a.filename == archive.MANIFEST:
                m_new, m_old = _manifest(zn, what), _manifest(zo, what)
                assert m_new == m_old, f"{what}: manifest changed without a new format version"
            else:
                _made_by_free(zn.read(a), zo.read(b), f"{what}: {a.filename}")


@pytest.mark.parametrize(("folder", "file", "entry"), CURRENT)
def test_current_version_reencodes_to_the_fixture(folder, file, entry, tmp_path):
    """Today's code writes the current version's fixtures again, byte for byte (but made_by)."""
    old = (FIXTURES / folder / file).read_bytes()
    what = f"{folder}/{file}"
    if INDEXES[folder]["kind"] == "stream":
        case = {c.name: c for c in gen.STREAM_CASES}.get(entry["case"])
        assert case is not None, f"{what}: case {entry['case']!r} left scripts/make_fixtures.py"
        arr = case.build()
        assert gen.describe(arr) == entry["input"], f"{what}: the input no longer reproduces"
        if case.base is not None:
            assert gen.describe(case.base()) == entry["base"]["array"], f"{what}: base changed"
        _made_by_free(gen.encode_stream(case, arr), old, what)
    else:
        case = {c.name: c for c in gen.ARCHIVE_CASES}.get(entry["case"])
        assert case is not None, f"{what}: case {entry['case']!r} left scripts/make_fixtures.py"
        try:
            made = gen.encode_archive(case, tmp_path)
        except ModuleNotFoundError as exc:  # the torch case builds its source with torch
            pytest.skip(f"{what}: building the source needs {exc.name}")
        want = entry.get("source", entry["expected"])["sha256"]  # "source": since archive v2
        assert _sha(made.source) == want, f"{what}: the source no longer reproduces"
        if made.base_archive is not None:  # --series: the first archive is committed too
            first = (FIXTURES / folder / entry["base"]["file"]).read_bytes()
            _same_archive(made.base_archive, first, f"{what} (the series' first archive)")
        elif made.base is not None:
            base = (FIXTURES / folder / entry["base"]["file"]).read_bytes()
            assert made.base.read_bytes() == base, f"{what}: the base no longer reproduces"
        _same_archive(made.blob, old, what)


def test_generator_refuses_an_existing_directory(tmp_path, capsys):
    assert gen.main(["stream", "--out", str(tmp_path)]) == 2
    assert "never regenerated" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
