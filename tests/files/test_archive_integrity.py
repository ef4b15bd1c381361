"""Archives from someone else (issue 19): a damaged or crafted ``.lmgc`` archive never decodes
into a different file with exit 0, and reading one stays in bounded memory. Each case is refused
through the real CLI with one ``error:`` line; the memory cases run ``lmgc`` in a subprocess and
bound its peak RSS and wall time."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import tempfile
import time
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from lmgc_core import Pipeline
from lmgc_core.stream.container import pack, unpack
from tests.cli_helpers import lmgc, one_error_line
from tests.conftest import same_bits
from tests.files.old_streams import old_array, old_stream

MAX_RSS = 400 << 20
MAX_WALL = 10.0


# -- building archives -----------------------------------------------------------------------------


def make_zip(entries: list[tuple[str, int, bytes, int, int]]) -> bytes:
    """A zip from ``(name, method, stored bytes, crc32, file_size)`` records, written by hand so
    that sizes and CRCs can say anything (``zipfile`` would need the inflated data)."""
    local, central = bytearray(), bytearray()
    for name, method, data, crc, size in entries:
        raw = name.encode()
        flags = 0 if raw.isascii() else 0x800
        central += struct.pack(
            "<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, flags, method, 0, 33, crc,
            len(data), size, len(raw), 0, 0, 0, 0, 0o644 << 16, len(local),
        ) + raw  # fmt: skip
        local += struct.pack(
            "<4sHHHHHIIIHH", b"PK\x03\x04", 20, flags, method, 0, 33, crc, len(data), size,
            len(raw), 0,
        ) + raw + data  # fmt: skip
    end = struct.pack(
        "<4sHHHHIIH", b"PK\x05\x06", 0, 0, len(entries), len(entries), len(central),
        len(local), 0,
    )  # fmt: skip
    return bytes(local + central + end)


def members_of(path: Path) -> list[tuple[str, bytes, int]]:
    """``(name, data, method)`` of every member, in zip order."""
    with zipfile.ZipFile(path) as z:
        return [(i.filename, z.read(i), i.compress_type) for i in z.infolist()]


def rewrite(path: Path, out: Path, replace: dict[str, bytes] | None = None, edit=None) -> None:
    """``path`` written again with members replaced and the manifest edited, its member list
    made to agree: an archive whose only flaw is the one a test puts in."""
    items = members_of(path)
    manifest = json.loads(dict((n, d) for n, d, _ in items)["__lmgc__.json"])
    data = [(n, (replace or {}).get(n, d)) for n, d, _ in items if n != "__lmgc__.json"]
    manifest["members"] = [[n, len(d), zlib.crc32(d)] for n, d in data]
    if edit:
        edit(manifest)
    with zipfile.ZipFile(out, "w") as z:
        for n, d in data:
            z.writestr(n, d)
        z.writestr("__lmgc__.json", json.dumps(manifest), zipfile.ZIP_DEFLATED)


def central_entries(blob: bytes) -> list[int]:
    """Offsets of the central directory entries."""
    (cd_offset,) = struct.unpack_from("<I", blob, len(blob) - 6)
    out, pos = [], cd_offset
    while blob[pos : pos + 4] == b"PK\x01\x02":
        out.append(pos)
        n, m, k = struct.unpack_from("<HHH", blob, pos + 28)
        pos += 46 + n + m + k
    return out


_MEASURED = """
import sys
from lmgc_core.__main__ import main
hwm, sys.argv = sys.argv[1], ["lmgc", *sys.argv[2:]]
try:
    main()
finally:  # VmHWM, read by the process itself: ru_maxrss keeps pytest's peak across fork + exec
    with open("/proc/self/status") as status, open(hwm, "w") as out:
        out.write(next(line for line in status if line.startswith("VmHWM:")).split()[1])
"""


def run_measured(*args: object) -> tuple[int, str, float, int]:
    """``lmgc ARGS`` in a fresh process: exit status, stderr, wall seconds, peak RSS in bytes
    (the process's own high-water mark)."""
    with tempfile.TemporaryDirectory() as tmp:
        hwm = Path(tmp) / "hwm"
        start = time.monotonic()
        try:  # a hang fails the test, not the session
            done = subprocess.run(
                [sys.executable, "-c", _MEASURED, str(hwm), *map(str, args)],
                capture_output=True,
                timeout=60,
            )
        except subprocess.TimeoutExpired:
            return -1, "timed out", time.monotonic() - start, 0
        wall = time.monotonic() - start
        rss = int(hwm.read_text()) << 10 if hwm.exists() else 1 << 62
        return done.returncode, done.stderr.decode(errors="replace"), wall, rss


def refused_in_bounds(*args: object) -> str:
    """The command failed with one ``error:`` line, under the RSS and time bounds."""
    status, stderr, wall, rss = run_measured(*args)
    lines = stderr.strip().splitlines()
    assert status == 1 and len(lines) == 1 and lines[0].startswith("error: "), (status, stderr)
    print(f"lmgc {args[0]}: peak RSS {rss >> 20} MiB, {wall:.2f} s: {lines[0][:90]}")
    assert rss < MAX_RSS, f"peak RSS {rss >> 20} MiB"
    assert wall < MAX_WALL, f"{wall:.1f} s"
    return lines[0]


def all_refuse(path: Path, *needles: str) -> None:
    """``decompress``, ``ls`` and ``info`` each refuse ``path`` with one error line."""
    for cmd in (["decompress", path, "-o", path.with_suffix(".out")], ["ls", path], ["info", path]):
        message = one_error_line(lmgc(*cmd, ok=False), 1)
        assert any(n in message for n in needles), message
    assert not path.with_suffix(".out").exists()


@pytest.fixture
def tensors(tmp_path, grads) -> Path:
    """A safetensors file with two tensors and metadata, and its archive."""
    src = tmp_path / "model.safetensors"
    save_file({"w": grads[:600].reshape(20, 30), "b": grads[600:630]}, str(src), {"format": "pt"})
    lmgc("compress", src)
    return tmp_path / "model.safetensors.lmgc"


# -- single flips that used to decode into a different file ----------------------------------------


def test_flipped_comment_length_in_central_directory(tensors):
    blob = bytearray(tensors.read_bytes())
    first = central_entries(bytes(blob))[0]
    blob[first + 32] ^= 0x01  # the first entry's comment length: 0 -> 1
    bad = tensors.with_name("bad.lmgc")
    bad.write_bytes(bytes(blob))
    all_refuse(bad, "corrupted lmgc archive")


@pytest.mark.parametrize("where", ["central", "local"])
def test_flipped_manifest_name(tensors, where):
    blob = bytearray(tensors.read_bytes())
    if where == "central":
        at = central_entries(bytes(blob))[-1] + 46
    else:
        with zipfile.ZipFile(tensors) as z:
            at = z.getinfo("__lmgc__.json").header_offset + 30
    assert blob[at : at + 13] == b"__lmgc__.json"
    blob[at + 2] ^= 0x04  # __lmgc__.json -> __hmgc__.json
    bad = tensors.with_name("bad.lmgc")
    bad.write_bytes(bytes(blob))
    all_refuse(bad, "corrupted lmgc archive")


# -- members that are not what they say ------------------------------------------------------------


def stream(grads: np.ndarray, n: int = 50) -> bytes:
    return Pipeline.from_config().compress(grads[:n])


def test_duplicate_member_names(tmp_path, grads):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate, and writes it
        with zipfile.ZipFile(tmp_path / "dup.lmgc", "w") as z:
            z.writestr("array.lmgc", stream(grads, 50))
            z.writestr("array.lmgc", stream(grads, 60))
    all_refuse(tmp_path / "dup.lmgc", "two members named 'array.lmgc'")


def test_duplicate_member_in_an_archive_with_manifest(tmp_path, grads):
    np.savez(tmp_path / "a.npz", w=grads[:100], b=grads[100:120])
    lmgc("compress", tmp_path / "a.npz")
    items = members_of(tmp_path / "a.npz.lmgc")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with zipfile.ZipFile(tmp_path / "dup.lmgc", "w") as z:
            z.writestr(items[0][0], items[1][1])  # b's stream under w's name, first
            for name, data, method in items:
                z.writestr(name, data, method)
    all_refuse(tmp_path / "dup.lmgc", "two members named 'w.lmgc'")


def test_deflated_member(tmp_path, grads):
    # a one-array .npz ("array"): a .npy would be written in the compact form, without a zip
    blob = stream(grads)
    with zipfile.ZipFile(tmp_path / "d.lmgc", "w") as z:
        z.writestr("w.lmgc", blob, zipfile.ZIP_DEFLATED)
    all_refuse(tmp_path / "d.lmgc", "is compressed")
    np.savez(tmp_path / "g.npz", array=grads[:100])
    lmgc("compress", tmp_path / "g.npz")
    items = members_of(tmp_path / "g.npz.lmgc")
    with zipfile.ZipFile(tmp_path / "m.lmgc", "w") as z:  # with a manifest too
        for name, data, _ in items:
            z.writestr(name, data, zipfile.ZIP_DEFLATED)
    all_refuse(tmp_path / "m.lmgc", "is compressed")


@pytest.mark.parametrize(
    "name",
    ["../../x.lmgc", "/abs.lmgc", "a\\b.lmgc", "C:\\x.lmgc", "d//w.lmgc", "./w.lmgc", "d/../w.lmgc",
     "w\n.lmgc", "\x1b[2J.lmgc", "w\0.lmgc", "x" * 1100 + ".lmgc"],
)  # fmt: skip
def test_names_that_are_not_plain(tmp_path, grads, name):
    blob = stream(grads)
    member = (0, blob, zlib.crc32(blob), len(blob))  # by hand: zipfile cuts names at NUL
    (tmp_path / "n.lmgc").write_bytes(make_zip([("ok.lmgc", *member), (name, *member)]))
    all_refuse(tmp_path / "n.lmgc", "is not a plain relative name")


def test_relative_names_from_before_format_2_still_read(tmp_path, grads):
    """lmgc named members after tensors before archive format 2: ``params/dense/kernel:0``."""
    with zipfile.ZipFile(tmp_path / "old.lmgc", "w") as z:
        z.writestr("params/dense/kernel:0.lmgc", old_stream())
    lmgc("decompress", tmp_path / "old.lmgc", "-o", tmp_path / "old.npz")
    with np.load(tmp_path / "old.npz") as z:
        assert z.files == ["params/dense/kernel:0"]


def test_member_outside_the_manifest_and_manifest_not_last(tmp_path, grads):
    np.savez(tmp_path / "g.npz", array=grads[:100])
    lmgc("compress", tmp_path / "g.npz")
    items = members_of(tmp_path / "g.npz.lmgc")
    with zipfile.ZipFile(tmp_path / "extra.lmgc", "w") as z:
        for name, data, method in items:
            z.writestr(name, data, method)
        z.writestr("more.lmgc", stream(grads))
    all_refuse(tmp_path / "extra.lmgc", "manifest not last")
    rewrite(tmp_path / "g.npz.lmgc", tmp_path / "v1.lmgc", edit=lambda m: m.update(lmgc_archive=1))
    items = members_of(tmp_path / "v1.lmgc")
    with zipfile.ZipFile(tmp_path / "extra1.lmgc", "w") as z:
        z.writestr("more.lmgc", stream(grads))
        for name, data, method in items:
            z.writestr(name, data, method)
    all_refuse(tmp_path / "extra1.lmgc", "name 1 members, the zip holds 2")
    lmgc("decompress", tmp_path / "v1.lmgc", "-o", tmp_path / "v1.npz")  # version 1 still reads
    assert (tmp_path / "v1.npz").read_bytes() == (tmp_path / "g.npz").read_bytes()


def test_manifest_member_list_must_match(tmp_path, grads):
    np.savez(tmp_path / "g.npz", array=grads[:100])
    lmgc("compress", tmp_path / "g.npz")

    def wrong_crc(m):
        m["members"][0][2] ^= 1

    rewrite(tmp_path / "g.npz.lmgc", tmp_path / "bad.lmgc", edit=wrong_crc)
    all_refuse(tmp_path / "bad.lmgc", "not the ones its manifest lists")
    rewrite(tmp_path / "g.npz.lmgc", tmp_path / "none.lmgc", edit=lambda m: m.pop("members"))
    all_refuse(tmp_path / "none.lmgc", "bad manifest")
    twice = tmp_path / "twice.lmgc"  # the tensor's data twice in the rebuilt file
    rewrite(tmp_path / "g.npz.lmgc", twice, edit=lambda m: m["segments"].append(["tensor", 0]))
    all_refuse(twice, "do not place each tensor once")


def test_chunk_of_another_shape_is_refused(tmp_path, grads):
    """A member holding a valid stream of another shape than its chunk (here: the next chunk's
    stream in its place, with the member list rewritten to match)."""
    np.save(tmp_path / "g.npy", grads[:4096].reshape(64, 64))
    lmgc("compress", tmp_path / "g.npy", "--chunk-size", "5000")
    items = dict((n, d) for n, d, _ in members_of(tmp_path / "g.npy.lmgc"))
    last = max(n for n in items if n.startswith("array@"))
    rewrite(tmp_path / "g.npy.lmgc", tmp_path / "bad.lmgc", {"array@0.lmgc": items[last]})
    all_refuse(tmp_path / "bad.lmgc", "the manifest says chunk 0")


# -- memory: declared sizes are checked before anything is allocated -------------------------------


def test_manifest_listing_one_member_a_million_times(tmp_path, grads):
    np.savez(tmp_path / "g.npz", array=grads[:100])
    lmgc("compress", tmp_path / "g.npz")
    rewrite(
        tmp_path / "g.npz.lmgc",
        tmp_path / "many.lmgc",
        edit=lambda m: m["tensors"][0].update(members=["array.lmgc"] * 1_000_000),
    )
    for args in (["decompress", tmp_path / "many.lmgc", "-o", tmp_path / "x.npz"],
                 ["ls", tmp_path / "many.lmgc"]):  # fmt: skip
        assert "name 1000000 members, the zip holds 1" in refused_in_bounds(*args)
    assert not (tmp_path / "x.npz").exists()


def _deflated(head: bytes, middle: bytes, tail: bytes, repeat: int) -> tuple[bytes, int, int]:
    """Raw deflate of ``head + middle * (repeat * k) + tail``, its CRC-32 and inflated size,
    without building the text: ``middle`` repeated to ~16 MiB is deflated once, after a full
    flush (so it starts afresh), and that piece repeated ``repeat`` times."""
    block = middle * ((16 << 20) // len(middle))
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = packer.compress(head) + packer.flush(zlib.Z_FULL_FLUSH)
    piece = packer.compress(block) + packer.flush(zlib.Z_FULL_FLUSH)
    assert packer.compress(block) + packer.flush(zlib.Z_FULL_FLUSH) == piece
    last = packer.compress(tail) + packer.flush()
    crc = zlib.crc32(head)
    for _ in range(repeat):
        crc = zlib.crc32(block, crc)
    crc = zlib.crc32(tail, crc)
    return first + piece * repeat + last, crc, len(head) + len(block) * repeat + len(tail)


def zeros_member(blob: bytes) -> tuple[str, int, bytes, int, int]:
    return ("array.lmgc", 0, blob, zlib.crc32(blob), len(blob))


@pytest.mark.parametrize("declared", ["honest", "small"])
def test_manifest_deflate_bomb(tmp_path, grads, declared):
    """~1 MB of deflated manifest that inflates to 1 GiB of ``[]`` (the zip entry telling the
    truth about its size, or not)."""
    data, crc, size = _deflated(b'{"lmgc_archive":2,"x":[', b"[],", b"[]]}", 64)
    assert len(data) < 2 << 20 and size > 1_000_000_000
    entry = ("__lmgc__.json", 8, data, crc, size if declared == "honest" else 1000)
    (tmp_path / "bomb.lmgc").write_bytes(make_zip([zeros_member(stream(grads)), entry]))
    for args in (["decompress", tmp_path / "bomb.lmgc", "-o", tmp_path / "x.npy"],
                 ["ls", tmp_path / "bomb.lmgc"]):  # fmt: skip
        message = refused_in_bounds(*args)
        assert "manifest" in message and "bytes" in message, message


def test_manifest_of_empty_lists_under_the_size_cap(tmp_path, grads):
    """48 MiB of ``[]`` (under the 64 MiB text cap) would parse into ~1 GB of lists."""
    data, crc, size = _deflated(b'{"lmgc_archive":2,"x":[', b"[],", b"[]]}", 3)
    entry = ("__lmgc__.json", 8, data, crc, size)
    (tmp_path / "lists.lmgc").write_bytes(make_zip([zeros_member(stream(grads)), entry]))
    message = refused_in_bounds("ls", tmp_path / "lists.lmgc")
    assert "JSON values" in message, message


def test_manifest_of_escaped_quotes(tmp_path, grads):
    """48 MiB of ``\\"`` in one unterminated string: the JSON caps' scan stays linear."""
    data, crc, size = _deflated(b'{"lmgc_archive":2,"x":"', b'\\"', b"", 3)
    entry = ("__lmgc__.json", 8, data, crc, size)
    (tmp_path / "quotes.lmgc").write_bytes(make_zip([zeros_member(stream(grads)), entry]))
    assert "unreadable manifest" in refused_in_bounds("ls", tmp_path / "quotes.lmgc")


def test_stream_header_of_escaped_quotes(tmp_path):
    """The same for a stream header: 8 MiB of ``\\"`` (under its 16 MiB cap)."""
    from lmgc_core.stream import container

    head = container.deflate_header(b'{"x":"' + b'\\"' * (4 << 20))
    prefix = struct.pack("<4sBI", container.MAGIC, container.VERSION, len(head))
    crc = struct.pack("<I", zlib.crc32(prefix + head))
    (tmp_path / "quotes.lmgc").write_bytes(prefix + head + crc)
    args = ["decompress", tmp_path / "quotes.lmgc", "-o", tmp_path / "x.npy"]
    assert "header is unreadable" in refused_in_bounds(*args)


def test_deflated_member_inflating_to_a_gibibyte(tmp_path):
    zeros = bytes(16 << 20)
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    piece = packer.compress(zeros) + packer.flush(zlib.Z_FULL_FLUSH)  # the same bytes each time
    assert packer.compress(zeros) + packer.flush(zlib.Z_FULL_FLUSH) == piece
    data = piece * 64 + packer.flush()
    crc = 0
    for _ in range(64):
        crc = zlib.crc32(zeros, crc)
    assert len(data) < 2 << 20
    (tmp_path / "big.lmgc").write_bytes(make_zip([("w.lmgc", 8, data, crc, 1 << 30)]))
    for cmd in (["decompress", tmp_path / "big.lmgc", "-o", tmp_path / "x.npy"], ["ls"]):
        args = cmd if len(cmd) > 1 else [*cmd, tmp_path / "big.lmgc"]
        assert "is compressed" in refused_in_bounds(*args)


def test_member_declaring_gigabytes_the_manifest_does_not(tmp_path, grads):
    """A valid-looking stream of 1.5 GB of zeros (the same block 384 times: a few KB) in the
    place of a small tensor's member: refused from its header, before decoding allocates."""
    np.savez(tmp_path / "g.npz", array=np.zeros(3 << 20, np.float32))
    lmgc("compress", tmp_path / "g.npz")
    small = dict((n, d) for n, d, _ in members_of(tmp_path / "g.npz.lmgc"))["array.lmgc"]
    box = unpack(small)
    header = dict(box.header)
    n_blocks = 384
    count = n_blocks * (1 << 20)
    (part,) = header["parts"]
    header["parts"] = [
        {**part, "count": count, "array": {**part["array"], "shape": [count]},
         "blocks": [part["blocks"][0]] * n_blocks}
    ]  # fmt: skip
    header["array"] = {**header["array"], "shape": [count]}
    huge = pack(header, [bytes(box.blocks[0])] * n_blocks)
    assert len(huge) < 200_000
    rewrite(tmp_path / "g.npz.lmgc", tmp_path / "huge.lmgc", {"array.lmgc": huge})
    for cmd in ("decompress", "info"):
        args = [cmd, tmp_path / "huge.lmgc"] + (["-o", tmp_path / "x.npz"] * (cmd != "info"))
        message = refused_in_bounds(*args)
        assert "declares float32 (402653184,)" in message and "(3145728,)" in message, message


# -- what still reads ------------------------------------------------------------------------------


def test_archives_without_manifest_still_decode(tmp_path, grads):
    """What lmgc wrote before the manifest: plain zipfile, stored ``<name>.lmgc`` streams of
    format 1 (a newer one means the manifest was lost: test_hostile_archives.py)."""
    with zipfile.ZipFile(tmp_path / "old.lmgc", "w") as z:
        z.writestr("w.lmgc", old_stream("w"))
        z.writestr("b.lmgc", old_stream("b"))
    lmgc("decompress", tmp_path / "old.lmgc", "-o", tmp_path / "old.npz")
    with np.load(tmp_path / "old.npz") as z:
        assert z.files == ["w", "b"] and same_bits(z["w"], old_array("w"))
    assert "no manifest" in lmgc("info", tmp_path / "old.lmgc").stdout
    with zipfile.ZipFile(tmp_path / "odd.lmgc", "w") as z:  # a member that is no stream
        z.writestr("w.lmgc", old_stream("b"))
        z.writestr("readme.txt", b"hello")
    all_refuse(tmp_path / "odd.lmgc", "is not an lmgc stream")
    with zipfile.ZipFile(tmp_path / "new.lmgc", "w") as z:  # a stream of today: no manifest lost
        z.writestr("w.lmgc", old_stream("w"))
        z.writestr("b.lmgc", Pipeline.from_config().compress(grads[:5]))
    all_refuse(tmp_path / "new.lmgc", "its manifest is missing")


@pytest.mark.parametrize("limit", ["small", "above the first member"])
def test_zip64_records_are_read(tmp_path, grads, monkeypatch, limit):
    """ArchiveWriter allows Zip64; with zipfile's limits lowered, a small archive gets the
    real Zip64 extra fields and end records a >4 GiB one would have. Just above a member's
    size, zipfile gives a member's local header a Zip64 field though its sizes fit in 32 bits
    (a member of 4.1 GB would get that)."""
    np.savez(tmp_path / "a.npz", w=grads[:3000], b=grads[3000:3100])
    lmgc("compress", tmp_path / "a.npz", "--chunk-size", "4000", "-o", tmp_path / "plain.lmgc")
    with zipfile.ZipFile(tmp_path / "plain.lmgc") as z:
        first = z.infolist()[0].file_size
    monkeypatch.setattr(zipfile, "ZIP64_LIMIT", 1000 if limit == "small" else first + 1)
    monkeypatch.setattr(zipfile, "ZIP_FILECOUNT_LIMIT", 2)
    lmgc("compress", tmp_path / "a.npz", "--chunk-size", "4000")
    monkeypatch.undo()
    blob = (tmp_path / "a.npz.lmgc").read_bytes()
    assert b"PK\x06\x06" in blob and b"PK\x06\x07" in blob and b"\x01\x00\x10\x00" in blob
    if limit != "small":
        assert struct.unpack_from("<H", blob, 28)[0] == 20  # a Zip64 field in its header
    (tmp_path / "a.npz").rename(tmp_path / "orig.npz")
    lmgc("decompress", tmp_path / "a.npz.lmgc")
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "orig.npz").read_bytes()


def test_member_names_from_any_tensor_name(tmp_path, grads):
    """Tensor names with separators or control characters still make plain member names."""
    names = ["a/b", "..", "x\ny", "\\", "c" * 2000]
    np.savez(tmp_path / "n.npz", **{k: grads[i : i + 10] for i, k in enumerate(names)})
    lmgc("compress", tmp_path / "n.npz")
    with zipfile.ZipFile(tmp_path / "n.npz.lmgc") as z:
        members = z.namelist()
    assert all("/" not in m and "\n" not in m and len(m) < 300 for m in members), members
    (tmp_path / "n.npz").rename(tmp_path / "orig.npz")
    lmgc("decompress", tmp_path / "n.npz.lmgc")
    assert (tmp_path / "n.npz").read_bytes() == (tmp_path / "orig.npz").read_bytes()


# -- output hygiene --------------------------------------------------------------------------------


def test_control_characters_are_escaped_in_ls_and_info(tmp_path, grads):
    evil = "w\x1b[31mred\nfake row\x07"
    src = tmp_path / "m\x1b]0;title\x07.safetensors"
    save_file({evil: grads[:10], "plain.name": grads[10:20]}, str(src), {"k": "v\x1b[2J"})
    lmgc("compress", src, "-o", tmp_path / "m.lmgc")
    ls = lmgc("ls", tmp_path / "m.lmgc").stdout
    info = lmgc("info", tmp_path / "m.lmgc").stdout
    for out in (ls, info):
        assert "\x1b" not in out and "\x07" not in out, out
        assert "w\\x1b[31mred\\nfake row\\x07" in out and "plain.name" in out
    assert len(ls.splitlines()) == 4  # header, two tensors, total: no injected line
    assert "m\\x1b]0;title\\x07.safetensors" in info and "\\x1b[2J" in info
    doc = json.loads(lmgc("info", "--json", tmp_path / "m.lmgc").stdout)
    assert sorted(m["name"] for m in doc["members"]) == sorted([evil, "plain.name"])


def test_info_of_a_header_with_odd_json(tmp_path, grads):
    """A stream header can hold any JSON its CRC covers: ``info`` shows it, never crashes."""
    box = unpack(stream(grads))
    header = {**box.header, "pipeline": {"stages": "x", "coder": 3}, "prior": "p", "sha256": 1}
    header["parts"] = [{**header["parts"][0], "name": ["n"], "count": {}}]
    (tmp_path / "odd.lmgc").write_bytes(pack(header, [bytes(b) for b in box.blocks]))
    out = lmgc("info", tmp_path / "odd.lmgc").stdout
    assert "stages     []" in out and "coder      3" in out and "['n'] {} x" in out
    header["pipeline"] = "not an object"
    (tmp_path / "odd.lmgc").write_bytes(pack(header, [bytes(b) for b in box.blocks]))
    assert "serializer None" in lmgc("info", tmp_path / "odd.lmgc").stdout
    one_error_line(lmgc("decompress", tmp_path / "odd.lmgc", "-o", tmp_path / "o.npy", ok=False), 1)


def test_too_many_tensors_are_not_told_to_use_a_larger_chunk_size(tmp_path, grads, monkeypatch):
    """A file of more tensors than the member cap was told "use a larger --chunk-size", which
    cannot help (each tensor is a member whatever its chunks): the error now counts the
    tensors and says what does help."""
    from lmgc_core.files import zip_scan

    np.savez(tmp_path / "many.npz", **{f"t{i}": grads[i : i + 8] for i in range(5)})
    monkeypatch.setattr(zip_scan, "MAX_MEMBERS", 4)
    again = lmgc("compress", tmp_path / "many.npz", "--chunk-size", str(1 << 30), ok=False)
    message = one_error_line(again, 1)
    assert "5 tensors" in message and "--dtype uint8" in message
    assert "--chunk-size" not in message and not (tmp_path / "many.npz.lmgc").exists()


def test_member_count_cap_on_both_sides(tmp_path, grads, monkeypatch):
    """What compress would write past the member cap it refuses; reading refuses it too."""
    from lmgc_core.files import filecodec, zip_scan

    np.save(tmp_path / "g.npy", grads[:4096].reshape(64, 64))
    lmgc("compress", tmp_path / "g.npy", "--chunk-size", "4096")  # 4 chunks + the manifest
    monkeypatch.setattr(zip_scan, "MAX_MEMBERS", 4)
    out = tmp_path / "x"
    coded = []  # refused before any chunk is coded (it was after every one: minutes on GBs)
    real = filecodec.coding_view
    monkeypatch.setattr(filecodec, "coding_view", lambda a: coded.append(1) or real(a))
    again = lmgc("compress", tmp_path / "g.npy", "--chunk-size", "4096", "-o", out, ok=False)
    message = one_error_line(again, 1)
    assert "over 4 archive members" in message and "--chunk-size" in message
    assert not out.exists() and coded == []
    all_refuse(tmp_path / "g.npy.lmgc", "lists 5 members")
    monkeypatch.setattr(zip_scan, "MAX_MEMBERS", 5)
    lmgc("decompress", tmp_path / "g.npy.lmgc", "-o", tmp_path / "back.npy")
    assert (tmp_path / "back.npy").read_bytes() == (tmp_path / "g.npy").read_bytes()
