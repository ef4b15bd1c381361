"""Checkpoints in, checkpoints out: every input format and dtype comes back byte for byte through
the CLI (``lmgc decompress x.lmgc`` with no ``-o``), conversions keep arrays exact, and outputs
are never overwritten or left half-written."""

from __future__ import annotations

import io
import json
import struct
import warnings
import zipfile
import zlib
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
import safetensors.numpy

from lmgc_core.util.errors import ChecksumError
from tests.cli_helpers import lmgc, one_error_line
from tests.conftest import same_bits
from tests.files.old_streams import old_array, old_stream


def round_trip(src: Path, *options: str) -> bytes:
    """Compress ``src``, move it away, decompress with no ``-o``: the bytes that came back."""
    original = src.read_bytes()
    lmgc("compress", src, *options)
    src.rename(src.with_name(src.name + ".orig"))
    lmgc("decompress", f"{src}.lmgc")
    back = src.read_bytes()
    assert back == original, f"{src.name} did not come back byte for byte"
    return back


def values(grads: np.ndarray, n: int, dtype: object) -> np.ndarray:
    return grads[:n].astype(np.float64).astype(dtype)


# -- safetensors -------------------------------------------------------------------------------


def test_safetensors_every_torch_dtype_and_metadata(tmp_path, grads):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    g = torch.from_numpy(grads[:96].copy())
    tensors = {
        "f64": g.double(),
        "f32": g.reshape(8, 12),
        "f16": g.half(),
        "bf16": g.bfloat16().reshape(4, 24),
        "f8_e4m3": g.to(torch.float8_e4m3fn),
        "f8_e5m2": g.to(torch.float8_e5m2),
        "f8_e4m3fnuz": g.to(torch.float8_e4m3fnuz),
        "f8_e5m2fnuz": g.to(torch.float8_e5m2fnuz),
        "f8_e8m0": g.abs().to(torch.float8_e8m0fnu),
        "f4": torch.arange(8, dtype=torch.uint8).view(torch.float4_e2m1fn_x2),
        "c64": torch.complex(g, -g),
        "i64": (g * 1e6).long(),
        "i32": (g * 1e6).int(),
        "i16": (g * 1e4).short(),
        "i8": (g * 1e2).to(torch.int8),
        "u8": torch.arange(96, dtype=torch.uint8),
        "u16": torch.arange(96).to(torch.uint16),
        "u32": torch.arange(96).to(torch.uint32),
        "u64": torch.arange(96).to(torch.uint64),
        "bool": g > 0,
        "empty": torch.zeros(0, 3),
        "scalar": g[0].clone(),
    }
    path = tmp_path / "model.safetensors"
    save_file(tensors, str(path), metadata={"format": "pt", "note": "kept"})
    round_trip(path)
    doc = json.loads(lmgc("info", "--json", f"{path}.lmgc").stdout)
    assert doc["format"] == "safetensors" and doc["metadata"] == {"format": "pt", "note": "kept"}
    names = [m["name"] for m in doc["members"]]
    assert sorted(names) == sorted(tensors)
    header_len = struct.unpack("<Q", (tmp_path / "model.safetensors").read_bytes()[:8])[0]
    order = json.loads(path.read_bytes()[8 : 8 + header_len])
    assert names == [k for k in order if k != "__metadata__"]  # the file's own member order
    dtypes = {m["name"]: m["dtype"] for m in doc["members"]}
    assert dtypes["bf16"] == "bfloat16" and dtypes["f8_e4m3"] == "float8_e4m3fn"


def test_safetensors_written_by_numpy_and_by_hand(tmp_path, grads):
    from safetensors.numpy import load_file, save_file

    arrays = {"w": grads[:600].reshape(20, 30), "b": grads[:7].astype(np.float16)}
    save_file(arrays, str(tmp_path / "np.safetensors"))
    round_trip(tmp_path / "np.safetensors")
    back = load_file(str(tmp_path / "np.safetensors"))
    assert all(same_bits(back[k], v) for k, v in arrays.items())

    # bfloat16 written without torch, an unknown future dtype, a gap and padding in the data
    bf16 = grads[:10].astype(ml_dtypes.bfloat16)
    header = {
        "__metadata__": {"who": "hand"},
        "x": {"dtype": "BF16", "shape": [2, 5], "data_offsets": [0, 20]},
        "y": {"dtype": "F6_E2M3", "shape": [4], "data_offsets": [24, 27]},
        "z": {"dtype": "X7_NEW", "shape": [3], "data_offsets": [27, 33]},
    }
    text = json.dumps(header).encode() + b"   "
    data = bf16.tobytes() + b"\0gap" + b"\x01\x02\x03" + b"ABCDEF" + b"tail"
    (tmp_path / "hand.safetensors").write_bytes(struct.pack("<Q", len(text)) + text + data)
    round_trip(tmp_path / "hand.safetensors")
    # numpy has no type for y and z: ls names theirs, a conversion says it writes their bytes
    lmgc("compress", tmp_path / "hand.safetensors", "-o", tmp_path / "hand.lmgc")
    rows = [line.split()[:3] for line in lmgc("ls", tmp_path / "hand.lmgc").stdout.splitlines()]
    assert ["y", "F6_E2M3", "(4,)"] in rows and ["z", "X7_NEW", "(3,)"] in rows
    said = lmgc("decompress", tmp_path / "hand.lmgc", "-o", tmp_path / "h.npz").stderr
    assert "tensor 'y' (F6_E2M3, shape [4]) as its 3 bytes (uint8)" in said
    assert "tensor 'z' (X7_NEW, shape [3]) as its 6 bytes (uint8)" in said
    kept = lmgc("decompress", tmp_path / "hand.lmgc", "-o", tmp_path / "h.safetensors").stderr
    assert "uint8" not in kept  # safetensors keeps their dtypes and shapes


def test_packed_f4_comes_to_torch_as_the_safetensors_package_gives_it(tmp_path):
    """torch has float4_e2m1fn_x2 (two values a byte): safe_open(framework="pt") gave packed F4
    as uint8 bytes, where the safetensors package gives that dtype, the last dimension
    halved; an odd last dimension stays flat bytes."""
    torch = pytest.importorskip("torch")
    if not hasattr(torch, "float4_e2m1fn_x2"):
        pytest.skip("this torch has no float4_e2m1fn_x2")
    from safetensors import safe_open as package_open

    from lmgc_core.safetensors import safe_open

    header = {
        "a": {"dtype": "F4", "shape": [2, 8], "data_offsets": [0, 8]},
        "b": {"dtype": "F4", "shape": [3, 2], "data_offsets": [8, 11]},
        "c": {"dtype": "F32", "shape": [4], "data_offsets": [11, 27]},
    }
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path = tmp_path / "f4.safetensors"
    data = bytes(range(11)) + np.arange(4, dtype="<f4").tobytes()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    lmgc("compress", "-q", path)
    with package_open(str(path), "pt") as want, safe_open(f"{path}.lmgc", "pt") as got:
        for name in ("a", "b", "c"):
            w, g = want.get_tensor(name), got.get_tensor(name)
            assert (g.dtype, g.shape) == (w.dtype, w.shape), name
            assert g.view(torch.uint8).tolist() == w.view(torch.uint8).tolist(), name


def test_a_record_field_named_outside_latin_1_converts_to_npy_and_npz(tmp_path):
    """np.save writes such an array in .npy format 3.0 (a UTF-8 header); a conversion to .npy
    or .npz failed with the latin-1 codec's error, as version 2.0's header cannot hold it."""
    arr = np.zeros(4, dtype=[("名", "<f4"), ("b", "<i2")])
    arr["名"] = [1.5, -2.0, 3.25, 0.0]
    arr["b"] = [1, 2, 3, 4]
    np.save(tmp_path / "u.npy", arr)
    np.savez(tmp_path / "u.npz", x=arr)
    round_trip(tmp_path / "u.npy")
    round_trip(tmp_path / "u.npz")
    for src, out in (("u.npy", "conv.npz"), ("u.npz", "conv.npy")):
        lmgc("compress", "-q", "-f", tmp_path / src)
        lmgc("decompress", "-q", f"{tmp_path / src}.lmgc", "-o", tmp_path / out)
    with np.load(tmp_path / "conv.npz") as npz:
        (back,) = npz.values()
    for got in (back, np.load(tmp_path / "conv.npy")):
        assert got.dtype == arr.dtype and got.tobytes() == arr.tobytes()
    buf = io.BytesIO()
    np.save(buf, arr)  # the very header numpy writes
    assert (tmp_path / "conv.npy").read_bytes() == buf.getvalue()


# -- npz -------------------------------------------------------------------------------------------


def test_npz_stored_deflated_and_foreign_zips(tmp_path, grads):
    arrays = {
        "w": grads[:1000].reshape(10, 100),
        "b": grads[:10].astype(np.float16),
        "f": np.asfortranarray(grads[:60].reshape(6, 10)),
        "layer/0/bias": np.arange(5, dtype=">i4"),
    }
    np.savez(tmp_path / "a.npz", **arrays)
    round_trip(tmp_path / "a.npz")
    np.savez_compressed(tmp_path / "c.npz", **arrays)
    round_trip(tmp_path / "c.npz")
    with np.load(tmp_path / "c.npz") as z:
        assert all(same_bits(z[k], v) for k, v in arrays.items())

    # written to a pipe (data descriptors), with a member that is not an array and a comment
    buf = io.BytesIO()
    unseekable = type("Pipe", (), {"write": buf.write, "flush": lambda self: None})()
    with zipfile.ZipFile(unseekable, "w") as z:
        with z.open("x.npy", "w") as member:
            np.save(member, grads[:50])
        z.writestr("README.txt", "not an array")
        z.comment = b"made by hand"
    (tmp_path / "pipe.npz").write_bytes(buf.getvalue())
    round_trip(tmp_path / "pipe.npz")


def test_a_conversion_says_it_leaves_out_an_npz_member_that_is_not_an_array(tmp_path, grads):
    """A README beside the arrays came back in the .npz, but a conversion to safetensors
    dropped it without a word (as numpy's ``np.load`` lists it, a user expects it there)."""
    with zipfile.ZipFile(tmp_path / "r.npz", "w") as z:
        with z.open("w.npy", "w") as member:
            np.save(member, grads[:50])
        z.writestr("README.txt", "how these weights were made")
        z.writestr("sub/", b"")  # a folder's entry: no bytes to leave out
    said = lmgc("compress", tmp_path / "r.npz").stderr
    assert said.count("warning:") == 1 and "not an array is kept as it is: 'README.txt'" in said
    err = lmgc("decompress", tmp_path / "r.npz.lmgc", "-o", tmp_path / "r.safetensors").stderr
    assert "converting to safetensors leaves out" in err and "'README.txt'" in err
    assert safetensors.numpy.load_file(tmp_path / "r.safetensors").keys() == {"w"}


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_npz_member_of_python_objects_is_kept_as_its_bytes(tmp_path, grads, save):
    """One member of pickled objects (an object array saved with the weights) made compress
    refuse the whole .npz, and a folder copy it uncoded: it is kept as its bytes with a note,
    as members that are not arrays are, and the other arrays are coded."""
    save(tmp_path / "o.npz", w=grads[:1000], meta=np.array([{"step": 3}, "adam"], dtype=object))
    said = lmgc("compress", tmp_path / "o.npz").stderr
    assert "member 'meta.npy' holds Python objects (pickled): kept as it is" in said
    assert lmgc("ls", tmp_path / "o.npz.lmgc").stdout.split()[6:8] == ["w", "<f4"]
    (tmp_path / "o.npz.lmgc").unlink()
    round_trip(tmp_path / "o.npz")
    err = lmgc("decompress", tmp_path / "o.npz.lmgc", "-o", tmp_path / "o.safetensors").stderr
    assert "converting to safetensors leaves out what" in err and "'meta.npy'" in err


@pytest.mark.parametrize("level", [1, 5, 9, 0])
@pytest.mark.parametrize("piece", ["small", 1 << 20, 999_999, None])
def test_npz_deflated_at_any_zlib_level_comes_back_byte_for_byte(tmp_path, grads, level, piece):
    """The archive records the level whose deflate reproduces the member (it came back with
    the same arrays in other bytes when only the default level was tried). Level 0's stored
    blocks end where the writer split its input: it is tested and rebuilt in the same 1 MiB
    pieces (a 400 KB member rebuilt in 64 KiB chunks never decoded; compress said 0), and a
    member written in other pieces is kept as its bytes."""
    buf = io.BytesIO()
    np.save(buf, np.resize(grads, 100_000 if piece == "small" else 600_000))
    data = buf.getvalue()  # 0.4 MB in one write, or 2.4 MB in pieces (None: in one write)
    step = piece if isinstance(piece, int) else len(data)
    z = zipfile.ZipFile(tmp_path / "l.npz", "w", zipfile.ZIP_DEFLATED, compresslevel=level)
    with z, z.open("a.npy", "w") as member:
        for at in range(0, len(data), step):
            member.write(data[at : at + step])
    said = lmgc("compress", tmp_path / "l.npz").stderr
    (tmp_path / "l.npz.lmgc").unlink()
    round_trip(tmp_path / "l.npz", "--chunk-size", "65536")
    coded = "a" in lmgc("ls", tmp_path / "l.npz.lmgc").stdout.split()
    assert coded == ("deflated at level 0" not in said)
    assert coded == (level != 0 or piece in ("small", 1 << 20))  # the pieces lmgc tests with


def test_npz_members_of_one_name_are_each_their_own(tmp_path, grads):
    """zipfile writes two members of one name (with a warning); it opens the last by name, so
    the first deflated one's array was lost: compress said 0, decompress failed, and ``--format
    raw`` gave the second array twice, with exit 0."""
    with zipfile.ZipFile(tmp_path / "d.npz", "w", zipfile.ZIP_DEFLATED) as z:
        for fill in (0.0, 1.0):
            buf = io.BytesIO()
            np.save(buf, np.full(100, fill, np.float32))
            with warnings.catch_warnings():  # "Duplicate name: 'a.npy'"
                warnings.simplefilter("ignore")
                z.writestr("a.npy", buf.getvalue())
    round_trip(tmp_path / "d.npz")
    lmgc("decompress", tmp_path / "d.npz.lmgc", "-o", tmp_path / "d.raw", "--format", "raw")
    raw = np.fromfile(tmp_path / "d.raw", np.float32)
    assert raw.tolist() == [0.0] * 100 + [1.0] * 100


def test_npz_deflated_by_another_deflate_keeps_its_bytes(tmp_path, grads):
    """A deflate stream no zlib level reproduces (here: the padding bits after its last block
    changed, as another implementation may leave them) is kept as it is: byte for byte, with
    a note, instead of the same arrays in other bytes."""
    np.savez_compressed(tmp_path / "c.npz", x=grads[:10], y=np.arange(6, dtype=np.int16))
    data = bytearray((tmp_path / "c.npz").read_bytes())
    data[zipfile.ZipFile(tmp_path / "c.npz").infolist()[1].header_offset - 1] ^= 0x80
    (tmp_path / "c.npz").write_bytes(bytes(data))
    with np.load(tmp_path / "c.npz") as z:  # still a valid archive of the same arrays
        assert same_bits(z["x"], grads[:10])
    assert "does not reproduce at any level" in lmgc("compress", tmp_path / "c.npz").stderr
    lmgc("decompress", tmp_path / "c.npz.lmgc", "-o", tmp_path / "back.npz")
    assert (tmp_path / "back.npz").read_bytes() == bytes(data)
    # a conversion holds the coded arrays only: it says what it leaves out (it said nothing)
    err = lmgc("decompress", tmp_path / "c.npz.lmgc", "-o", tmp_path / "c.safetensors").stderr
    assert "converting to safetensors leaves out what" in err and "c.npz.lmgc kept as" in err


def test_a_zlib_that_deflates_otherwise_is_named(tmp_path, grads, monkeypatch):
    """Where the decoding machine's zlib deflates a member to other bytes (zlib-ng, which
    Fedora ships as zlib), the rebuilt file fails its hash: the error read like corruption.
    It now says why, and that a conversion works. (The other zlib is played by deflating at
    another level.)"""
    from lmgc_core.files import filecodec, writers
    from lmgc_core.files.folders import decompress_path

    np.savez_compressed(tmp_path / "g.npz", w=grads[:3000])
    lmgc("compress", "-q", tmp_path / "g.npz")
    deflate = zlib.compressobj
    monkeypatch.setattr(writers.zlib, "compressobj", lambda level, *a: deflate(1, *a))
    monkeypatch.setattr(filecodec.zlib, "ZLIB_RUNTIME_VERSION", "1.3.0.zlib-ng")
    with pytest.raises(
        ChecksumError,
        match=r"this machine's zlib \(1\.3\.0\.zlib-ng\) "
        r"may deflate them to other bytes .* converting them",
    ):
        decompress_path(tmp_path / "g.npz.lmgc", tmp_path / "back.npz")
    monkeypatch.undo()
    decompress_path(tmp_path / "g.npz.lmgc", tmp_path / "back.npz")
    assert (tmp_path / "back.npz").read_bytes() == (tmp_path / "g.npz").read_bytes()


def test_npz_member_order_kept_in_conversions(tmp_path, grads):
    np.savez(tmp_path / "o.npz", zeta=grads[:4], alpha=grads[4:8], mid=grads[8:12])
    lmgc("compress", tmp_path / "o.npz")
    lmgc("decompress", tmp_path / "o.npz.lmgc", "-o", tmp_path / "o.safetensors")
    header_len = struct.unpack("<Q", (tmp_path / "o.safetensors").read_bytes()[:8])[0]
    header = json.loads((tmp_path / "o.safetensors").read_bytes()[8 : 8 + header_len])
    assert list(header) == ["zeta", "alpha", "mid"]
    listing = lmgc("ls", tmp_path / "o.npz.lmgc").stdout.splitlines()
    assert [line.split()[0] for line in listing[1:4]] == ["zeta", "alpha", "mid"]


# -- npy -------------------------------------------------------------------------------------------

NPY_CASES = {
    "f2": np.float16,
    "f4-big": ">f4",
    "f8": np.float64,
    "i1": np.int8,
    "u8": np.uint64,
    "bool": np.bool_,
    "c8": np.complex64,
    "c16-big": ">c16",
    "datetime": "datetime64[ms]",
    "timedelta": "timedelta64[ns]",
    "bytes": "S5",
    "unicode": "<U3",
    "record": [("a", "<i2"), ("b", ">f8"), ("c", "S2")],
    "bf16": ml_dtypes.bfloat16,
    "f8e4m3": ml_dtypes.float8_e4m3fn,
}


@pytest.mark.parametrize("case", list(NPY_CASES))
def test_npy_every_dtype_byte_identical(tmp_path, grads, case):
    dtype = np.dtype(NPY_CASES[case])
    raw = np.frombuffer(grads[:120].tobytes(), dtype=np.uint8)
    n = 120 * 4 // dtype.itemsize
    arr = raw[: n * dtype.itemsize].view(dtype).reshape(n)
    if dtype.kind in "fc" or dtype.name in ("bfloat16", "float8_e4m3fn"):
        arr = values(grads, n, dtype)
    np.save(tmp_path / f"{case}.npy", arr)
    round_trip(tmp_path / f"{case}.npy")
    assert same_bits(np.load(tmp_path / f"{case}.npy"), np.load(tmp_path / f"{case}.npy.orig"))


def test_npy_shapes_orders_versions_and_trailing_bytes(tmp_path, grads):
    cases = {
        "scalar": np.float32(grads[3]),
        "empty": np.zeros((0, 4), np.float32),
        "fortran2": np.asfortranarray(grads[:60].reshape(6, 10)),
        "fortran3": np.asfortranarray(grads[:120].reshape(2, 6, 10)),
    }
    for name, arr in cases.items():
        np.save(tmp_path / f"{name}.npy", arr)
        round_trip(tmp_path / f"{name}.npy")
    # format 2.0 (a header over 64 KiB) and 3.0 (non-latin-1 field names)
    wide = np.dtype([(f"field{i:05d}", "<f4") for i in range(4000)])
    with open(tmp_path / "v2.npy", "wb") as f:
        np.lib.format.write_array(f, np.zeros(2, wide), version=(2, 0))
    round_trip(tmp_path / "v2.npy")
    with open(tmp_path / "v3.npy", "wb") as f:
        np.lib.format.write_array(f, np.zeros(3, [("größe", "<f4")]), version=(3, 0))
    round_trip(tmp_path / "v3.npy")
    np.save(tmp_path / "tail.npy", grads[:10])
    with open(tmp_path / "tail.npy", "ab") as f:
        f.write(b"bytes np.load ignores")
    round_trip(tmp_path / "tail.npy")


def _npy(header: str, data: bytes = b"") -> bytes:
    text = header.encode("latin1")
    pad = (64 - (10 + len(text) + 1) % 64) % 64
    length = struct.pack("<H", len(text) + pad + 1)
    return b"\x93NUMPY\x01\x00" + length + text + b" " * pad + b"\n" + data


def _st(header: dict, data: bytes) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


BAD_HEADERS = {  # what each said before: numpy's own words, or a 931 GiB allocation
    "sub.npy": (_npy("{'descr': ('<f4', (2,)), 'fortran_order': False, 'shape': (3,), }",
                     b"\0" * 24), "subarray descr"),  # "cannot reshape array of size 6"
    "descr.npy": (_npy("{'descr': ',i2', 'fortran_order': False, 'shape': (1,), }", b"ab"),
                  "bad descr"),
    "s0.npy": (_npy(f"{{'descr': '|S0', 'fortran_order': False, 'shape': ({10**12},), }}"),
               "items of 0 bytes"),
    "u0.npy": (_npy("{'descr': '<U0', 'fortran_order': False, 'shape': (3,), }"),
               "items of 0 bytes"),
    "dims.npy": (_npy("{'descr': '|u1', 'fortran_order': False, 'shape': (%s), }" % ("1," * 100),
                      b"\x01"), "100 dimensions"),
    "zero.npy": (_npy(f"{{'descr': '<f4', 'fortran_order': False, 'shape': ({2**62}, 0), }}"),
                 "too large"),
    "zero.safetensors": (_st({"a": {"dtype": "F32", "shape": [2**32, 2**32, 0],
                                    "data_offsets": [0, 0]}}, b""), "too large"),
    "dims.safetensors": (_st({"a": {"dtype": "U8", "shape": [1] * 100, "data_offsets": [0, 1]}},
                             b"\x01"), "100 dimensions"),
    "float.safetensors": (_st({"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4.0]}},
                              b"abcd"), "not two integers"),  # "outside the data"
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(BAD_HEADERS))
def test_headers_numpy_cannot_hold_are_one_clear_error(tmp_path, name):
    data, said = BAD_HEADERS[name]
    (tmp_path / name).write_bytes(data)
    message = one_error_line(lmgc("compress", tmp_path / name, ok=False), 1)
    assert said in message


def test_raw_items_of_no_bytes_say_what_to_do(tmp_path):
    """``--dtype V0`` said '0 bytes is not a whole number of |V0 items'."""
    (tmp_path / "v0.bin").write_bytes(b"")
    message = one_error_line(lmgc("compress", tmp_path / "v0.bin", "--dtype", "V0", ok=False), 1)
    assert "items of 0 bytes" in message and "--dtype uint8" in message


def test_raw_with_dtype(tmp_path, grads):
    (tmp_path / "w.bin").write_bytes(grads[:500].astype(ml_dtypes.bfloat16).tobytes())
    round_trip(tmp_path / "w.bin", "--dtype", "bfloat16")
    (tmp_path / "odd.bin").write_bytes(b"12345")
    message = one_error_line(lmgc("compress", tmp_path / "odd.bin", "--dtype", "f4", ok=False), 1)
    assert "whole number" in message


@pytest.mark.parametrize("name", ["a.npy", "r.safetensors", "c.npz"])
@pytest.mark.parametrize("chunk", [[], ["--chunk-size", "1024"]])
def test_a_file_coded_as_raw_bytes_comes_back_as_it_was_whatever_its_name(
    tmp_path, grads, name, chunk
):
    """With no ``-o``, the output's name (the source's) once chose a conversion: a ``.npy``
    coded with ``--dtype`` came back as a new ``.npy`` wrapping the old one's bytes, exit 0."""
    np.save(tmp_path / "x.npy", grads[:2560].reshape(40, 64))
    (tmp_path / name).write_bytes((tmp_path / "x.npy").read_bytes())
    round_trip(tmp_path / name, "--dtype", "uint8", *chunk)


# -- chunks, conversions, pipes -------------------------------------------------------------


def test_large_tensors_are_coded_in_chunks(tmp_path, grads):
    np.savez(
        tmp_path / "big.npz",
        rows=grads[:4096].reshape(64, 64),
        flat=grads[:3000],
        fortran=np.asfortranarray(grads[:2048].reshape(32, 64)),
    )
    round_trip(tmp_path / "big.npz", "--chunk-size", "1024")
    doc = json.loads(lmgc("info", "--json", tmp_path / "big.npz.lmgc").stdout)
    streams = {m["name"]: m["streams"] for m in doc["members"]}
    assert len(streams["rows"]) == 16 and len(streams["flat"]) == 12
    assert streams["rows"][0]["header"]["array"]["shape"] == [4, 64]  # whole rows
    lmgc("decompress", tmp_path / "big.npz.lmgc", "-o", tmp_path / "again.npz")
    with np.load(tmp_path / "again.npz") as z, np.load(tmp_path / "big.npz.orig") as ref:
        assert all(same_bits(z[k], ref[k]) for k in ref.files)


def test_float8_e5m2_converts_to_a_npz_that_loads(tmp_path, grads):
    """ml_dtypes' float8_e5m2 says descr '<f1', which np.load refuses: it goes out as '<V1',
    as the other float8s and bfloat16 do, and the bytes come back in lmgc."""
    torch = pytest.importorskip("torch")
    import safetensors.torch

    t = torch.from_numpy(grads[:8].copy())
    tensors = {"a": t.to(torch.float8_e5m2), "b": t.to(torch.float8_e4m3fn)}
    safetensors.torch.save_file(tensors, tmp_path / "f8.safetensors")
    lmgc("compress", tmp_path / "f8.safetensors")
    lmgc("decompress", tmp_path / "f8.safetensors.lmgc", "-o", tmp_path / "f8.npz")
    with np.load(tmp_path / "f8.npz") as z:
        for name, tensor in tensors.items():
            assert z[name].tobytes() == tensor.view(torch.uint8).numpy().tobytes()
    round_trip(tmp_path / "f8.npz")


def test_conversions_between_formats(tmp_path, grads):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file, save_file

    bf = torch.from_numpy(grads[:64].copy()).bfloat16().reshape(8, 8)
    save_file({"w": bf, "n": torch.arange(3)}, str(tmp_path / "m.safetensors"))
    lmgc("compress", tmp_path / "m.safetensors")
    lmgc("decompress", tmp_path / "m.safetensors.lmgc", "-o", tmp_path / "M.NPZ")
    assert (tmp_path / "M.NPZ").exists() and not (tmp_path / "M.NPZ.npz").exists()
    with np.load(tmp_path / "M.NPZ") as z:
        assert z["w"].tobytes() == bf.view(torch.int16).numpy().tobytes()
    lmgc("decompress", tmp_path / "m.safetensors.lmgc", "-o", tmp_path / "m2.safetensors")
    back = load_file(str(tmp_path / "m2.safetensors"))
    assert back["w"].dtype == torch.bfloat16 and back["w"].view(torch.int16).equal(
        bf.view(torch.int16)
    )
    # .npz keeps bfloat16 as opaque 2-byte items ('<V2'), which safetensors cannot name
    lmgc("compress", tmp_path / "M.NPZ", "-o", tmp_path / "m3.lmgc")
    out = tmp_path / "m3.safetensors"
    message = one_error_line(lmgc("decompress", tmp_path / "m3.lmgc", "-o", out, ok=False), 1)
    assert "safetensors has no dtype for |V2" in message and not out.exists()
    np.save(tmp_path / "g.npy", grads[:100])
    lmgc("compress", tmp_path / "g.npy")
    lmgc("decompress", tmp_path / "g.npy.lmgc", "-o", tmp_path / "BACK.NPY")
    assert (tmp_path / "BACK.NPY").read_bytes() == (tmp_path / "g.npy").read_bytes()
    lmgc("decompress", tmp_path / "g.npy.lmgc", "-o", tmp_path / "g.raw", "--format", "raw")
    assert (tmp_path / "g.raw").read_bytes() == grads[:100].tobytes()
    lmgc("decompress", tmp_path / "g.npy.lmgc", "-o", tmp_path / "g.safetensors")
    assert same_bits(load_file(str(tmp_path / "g.safetensors"))["arr_0"].numpy(), grads[:100])


def test_bare_streams_and_pre_manifest_archives(tmp_path, grads):
    from lmgc_core import Pipeline

    blob = Pipeline.from_config().compress(grads[:300].reshape(10, 30))
    (tmp_path / "s.lmgc").write_bytes(blob)
    lmgc("decompress", tmp_path / "s.lmgc", "-o", tmp_path / "s.npy")
    assert same_bits(np.load(tmp_path / "s.npy"), grads[:300].reshape(10, 30))
    with zipfile.ZipFile(tmp_path / "old.lmgc", "w") as z:  # what lmgc wrote before manifests
        z.writestr("w.lmgc", old_stream("w"))
        z.writestr("b.lmgc", old_stream("b"))
    lmgc("decompress", tmp_path / "old.lmgc", "-o", tmp_path / "old.npz")
    with np.load(tmp_path / "old.npz") as z:
        assert z.files == ["w", "b"] and same_bits(z["b"], old_array("b"))
    assert "lmgc stream" in lmgc("info", tmp_path / "s.lmgc").stdout


def test_stdin_and_stdout(tmp_path, grads):
    np.save(tmp_path / "g.npy", grads[:200])
    data = (tmp_path / "g.npy").read_bytes()
    packed = lmgc("compress", "-", input=data).stdout_bytes
    assert packed[:4] == b"LMGC"  # one array in one chunk: the compact form, one stream
    assert lmgc("decompress", "-", input=packed).stdout_bytes == data
    (tmp_path / "p.lmgc").write_bytes(packed)
    assert lmgc("decompress", tmp_path / "p.lmgc", "-o", "-").stdout_bytes == data
    lmgc("compress", "-", "-o", tmp_path / "q.lmgc", input=data)
    lmgc("decompress", tmp_path / "q.lmgc", "-o", tmp_path / "q.npy")
    assert (tmp_path / "q.npy").read_bytes() == data


# -- never overwrite, never leave half a file -----------------------------------------------


def test_an_output_that_is_a_pipe_is_written_into_not_replaced(tmp_path, grads):
    """``-o FIFO -f`` renamed a regular file over the FIFO: its reader got nothing (and, as
    root, ``-o /dev/null -f`` deleted the device node)."""
    import os
    import stat
    import threading

    np.save(tmp_path / "a.npy", grads[:64])
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    lmgc("compress", "-f", tmp_path / "a.npy", "-o", fifo)
    reader.join(30)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    (tmp_path / "a.npy.lmgc").write_bytes(got[0])
    lmgc("decompress", tmp_path / "a.npy.lmgc", "-o", tmp_path / "back.npy")
    assert (tmp_path / "back.npy").read_bytes() == (tmp_path / "a.npy").read_bytes()


def test_no_overwrite_without_force(tmp_path, grads):
    np.save(tmp_path / "g.npy", grads[:100])
    before = (tmp_path / "g.npy").read_bytes()
    message = one_error_line(
        lmgc("compress", tmp_path / "g.npy", "-o", tmp_path / "g.npy", ok=False), 2
    )
    assert "exists" in message and "--force" in message
    assert (tmp_path / "g.npy").read_bytes() == before
    lmgc("compress", tmp_path / "g.npy")
    one_error_line(lmgc("compress", tmp_path / "g.npy", ok=False), 2)
    one_error_line(lmgc("decompress", tmp_path / "g.npy.lmgc", ok=False), 2)  # g.npy exists
    lmgc("decompress", tmp_path / "g.npy.lmgc", "--force")
    assert (tmp_path / "g.npy").read_bytes() == before
    lmgc("compress", tmp_path / "g.npy", "-o", tmp_path / "g.npy", "--force")
    lmgc("decompress", tmp_path / "g.npy", "-o", tmp_path / "h.npy")
    assert (tmp_path / "h.npy").read_bytes() == before


def test_an_output_that_is_the_base_or_a_folder_to_stdout_is_refused(tmp_path, grads):
    """``--base old -o old -f`` replaced the base the archive needs (never decodable again),
    and ``-o -`` for a folder made a folder named ``-``; both exited 0."""
    np.save(tmp_path / "old.npy", grads[:500])
    np.save(tmp_path / "new.npy", grads[:500] * np.float32(1.001))
    before = (tmp_path / "old.npy").read_bytes()
    args = ("compress", tmp_path / "new.npy", "--base", tmp_path / "old.npy")
    message = one_error_line(lmgc(*args, "-o", tmp_path / "old.npy", "-f", ok=False), 2)
    assert "is the base" in message and (tmp_path / "old.npy").read_bytes() == before
    (tmp_path / "m").mkdir()
    np.save(tmp_path / "m" / "a.npy", grads[:64])
    message = one_error_line(lmgc("compress", tmp_path / "m", "-o", "-", ok=False), 2)
    assert "is a folder" in message and not (tmp_path / "-").exists()


def test_compress_with_lossy_stages_says_so(tmp_path, grads):
    """The note was added while coding, after the notes were printed: only decompress said."""
    np.save(tmp_path / "g.npy", grads[:100])
    result = lmgc("compress", tmp_path / "g.npy", "--stage", "quantize")
    assert "warning: lossy stages" in result.stderr
    # decompress and --test said only "checksums verified" (a folder's files were warned of)
    for args in (("-o", tmp_path / "back.npy"), ("--test",)):
        err = lmgc("decompress", "-q", tmp_path / "g.npy.lmgc", *args).stderr
        assert "lossy stages: the arrays are their reconstruction" in err


@pytest.mark.parametrize("chunk", [[], ["--chunk-size", "4096"]])
def test_a_file_that_changes_while_it_is_compressed_is_refused(tmp_path, grads, monkeypatch, chunk):
    """Appended to while it was coded, its archive held the old bytes and a hash of the new
    ones, exit 0, and could never be decompressed; in place (``-o a.npy -f``) the source was
    gone too."""
    from lmgc_core.files import filecodec

    np.save(src := tmp_path / "a.npy", grads[:4096])
    before = src.read_bytes()
    real, done = filecodec.coding_view, []

    def view_and_append(chunk):
        if not done:  # once (chunks are coded on two threads)
            done.append(1)
            with open(src, "ab") as f:
                f.write(b"appended while coding")
        return real(chunk)

    monkeypatch.setattr(filecodec, "coding_view", view_and_append)
    result = lmgc("compress", src, "-o", src, "-f", *chunk, ok=False)
    assert "changed while it was being compressed" in one_error_line(result, 1)
    assert src.read_bytes() == before + b"appended while coding"  # the source, untouched


def test_a_private_files_archive_and_restored_file_stay_private(tmp_path, grads):
    """Both were 0644 whatever the source's mode (gzip and zstd keep it)."""
    import os
    import stat

    np.save(src := tmp_path / "secret.npy", grads[:64])
    os.chmod(src, 0o600)
    lmgc("compress", src)
    lmgc("decompress", f"{src}.lmgc", "-o", back := tmp_path / "back.npy")
    for path in (tmp_path / "secret.npy.lmgc", back):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path


def test_a_full_disk_is_named(tmp_path, grads, monkeypatch):
    """The error said only "No space left on device": not where, nor that ``-o -`` spools to
    TMPDIR first."""
    import errno

    from lmgc_core.files import filecodec

    def full(src, layout, name, out, *args, **kwargs):
        out.write(b"some bytes")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(filecodec, "compress_file", full)
    np.save(tmp_path / "g.npy", grads[:64])
    line = one_error_line(lmgc("compress", tmp_path / "g.npy", ok=False), 1)
    assert line == (
        f"error: {tmp_path}: No space left on device (writing {tmp_path / 'g.npy.lmgc'})"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.npy"]  # no .part left
    line = one_error_line(lmgc("compress", tmp_path / "g.npy", "-o", "-", ok=False), 1)
    assert "spooled there first (TMPDIR)" in line


def test_failed_runs_leave_no_file(tmp_path, grads):
    np.save(tmp_path / "g.npy", grads[:4096].reshape(64, 64))
    lmgc("compress", tmp_path / "g.npy", "--chunk-size", "2048")
    with zipfile.ZipFile(tmp_path / "g.npy.lmgc") as z:
        members = {i.filename: i for i in z.infolist()}
    blob = bytearray((tmp_path / "g.npy.lmgc").read_bytes())
    late = members["array@5.lmgc"]  # a chunk in the middle: earlier chunks were already written
    blob[late.header_offset + 30 + len(late.filename) + late.file_size - 3] ^= 0x10
    (tmp_path / "bad.lmgc").write_bytes(bytes(blob))
    out = tmp_path / "out.npy"
    one_error_line(lmgc("decompress", tmp_path / "bad.lmgc", "-o", out, ok=False), 1)
    one_error_line(lmgc("info", tmp_path / "bad.lmgc", ok=False), 1)
    (tmp_path / "cut.lmgc").write_bytes(bytes(blob[: len(blob) // 2]))
    one_error_line(lmgc("ls", tmp_path / "cut.lmgc", ok=False), 1)
    one_error_line(lmgc("decompress", tmp_path / "cut.lmgc", "-o", out, ok=False), 1)
    (tmp_path / "half.npy").write_bytes((tmp_path / "g.npy").read_bytes()[:5000])
    one_error_line(lmgc("compress", tmp_path / "half.npy", ok=False), 1)
    leftovers = sorted(p.name for p in tmp_path.iterdir())
    assert leftovers == ["bad.lmgc", "cut.lmgc", "g.npy", "g.npy.lmgc", "half.npy"]


def test_info_is_one_json_document_and_ls_lists_members(tmp_path, grads):
    np.savez(tmp_path / "a.npz", w=grads[:1000].reshape(10, 100), b=grads[:10])
    lmgc("compress", tmp_path / "a.npz")
    doc = json.loads(lmgc("info", "--json", tmp_path / "a.npz.lmgc").stdout)  # exactly one
    assert [m["name"] for m in doc["members"]] == ["w", "b"]
    totals = doc["totals"]
    assert totals["tensors"] == 2 and totals["original_bytes"] == 4040
    assert totals["file_bytes"] == (tmp_path / "a.npz.lmgc").stat().st_size
    assert totals["compressed_bytes"] == sum(m["compressed_bytes"] for m in doc["members"])
    said = lmgc("info", tmp_path / "a.npz.lmgc").stdout.splitlines()[1].split()
    source = (tmp_path / "a.npz").stat().st_size  # the file it rebuilds, not only its arrays
    assert said[1:5] == [str(source), "->", str(totals["file_bytes"]), "bytes"]
    lines = lmgc("ls", tmp_path / "a.npz.lmgc").stdout.splitlines()
    assert lines[0].split() == ["name", "dtype", "shape", "original", "compressed", "ratio"]
    assert lines[1].split()[:4] == ["w", "<f4", "(10,", "100)"]
    assert lines[-1].startswith("total") and lines[-1].endswith("%")


@pytest.mark.parametrize("positional", [True, False])
def test_chunk_readers_give_the_sequential_chunks(tmp_path, grads, positional):
    """Chunks read by position (on the coding threads) are the chunks a sequential read gives,
    the stream ends after the tensor, and a file cut short is a clear error, not short data."""
    from lmgc_core.files.readers import chunk_readers, tensor_chunks
    from lmgc_core.files.segments import InputFileError, Tensor

    x = grads[:6000].reshape(60, 100)
    data = b"head" + x.tobytes() + b"tail"
    path = tmp_path / "t.bin"
    path.write_bytes(data)
    tensor = Tensor("t", x.dtype, x.shape)
    with open(path, "rb") as f:
        stream = f if positional else io.BytesIO(data)
        stream.seek(4)
        readers = list(chunk_readers(stream, tensor, 4096, "t.bin"))
        assert stream.tell() == 4 + x.nbytes
        stream.seek(4)
        want = list(tensor_chunks(stream, tensor, 4096, "t.bin"))
        got = [read() for read in reversed(readers)][::-1]  # any order, any thread
        # against the array itself (with BytesIO, chunk_readers *is* tensor_chunks): whole rows
        # of at most 4,096 bytes, in order, that put together are x bit for bit
        assert len(got) == len(want) > 1
        assert all(c.shape[1:] == x.shape[1:] and 0 < c.nbytes <= 4096 for c in got)
        assert same_bits(np.concatenate(got), x) and same_bits(np.concatenate(want), x)
    path.write_bytes(data[: 4 + x.nbytes // 2])
    with open(path, "rb") as f:
        f.seek(4)
        readers = list(chunk_readers(f, tensor, 4096, "t.bin"))
        with pytest.raises(InputFileError, match="file ended early"):
            [read() for read in readers]


def test_a_npy_header_of_too_many_items_is_refused_before_it_is_parsed(tmp_path):
    """ast.literal_eval of 1 MiB of ``[],`` took 520 MB (in a .npy, or a compact archive's
    record)."""
    from lmgc_core.files import npy

    text = "{'descr': '<f4', 'fortran_order': False, 'shape': (0,), 'x': [" + "[]," * 17000 + "]}"
    (tmp_path / "many.npy").write_bytes(_npy(text))
    message = one_error_line(lmgc("compress", tmp_path / "many.npy", ok=False), 1)
    assert f"over {npy.MAX_HEADER_ITEMS} items" in message


def test_partial_outputs_a_killed_run_left_are_said(tmp_path, grads):
    """A run killed while writing (SIGKILL, the OOM killer) leaves its hidden temporary file;
    the next run of the same output said nothing, so they piled up unseen."""
    np.save(tmp_path / "g.npy", grads[:1000])
    left = tmp_path / ".g.npy.lmgc.k1ll3d00.part"
    left.write_bytes(b"half an archive")
    err = lmgc("compress", "-q", tmp_path / "g.npy").stderr
    assert f"{left}: a partial output left by a killed run" in err
    assert left.exists()  # said, not removed: another run may be writing it
    (tmp_path / "m").mkdir()
    np.save(tmp_path / "m" / "a.npy", grads[:100])
    lmgc("compress", "-q", tmp_path / "m", "-o", tmp_path / "c")
    (tmp_path / "c" / ".a.npy.lmgc.k1ll3d00.part").write_bytes(b"half")
    err = lmgc("compress", "-q", "-f", tmp_path / "m", "-o", tmp_path / "c").stderr
    assert "/.a.npy.lmgc.k1ll3d00.part: a partial output left by a killed run" in err
