"""lmgc_core.safetensors: the safetensors API over lmgc archives, with the real coder and the
real safetensors package as the reference for what a .safetensors file holds."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
import safetensors.numpy
import safetensors.torch
import torch

from lmgc_core.files.folders import decompress_path
from lmgc_core.safetensors import TensorError, safe_open
from lmgc_core.safetensors import numpy as lnp
from lmgc_core.safetensors import torch as lpt
from lmgc_core.util.errors import LMGCError
from tests.cli_helpers import lmgc


def _torch_tensors(grads: np.ndarray) -> dict[str, torch.Tensor]:
    g = torch.from_numpy(grads[:4096].copy())
    return {
        "layer.weight": g.reshape(64, 64).to(torch.bfloat16),
        "layer.bias": g[:64].to(torch.float16),
        "f32": g[:1000],
        "steps": torch.arange(-5, 5, dtype=torch.int64),
        "mask": torch.tensor([True, False, True]),
        "empty": torch.zeros(0, 3),
        "scalar": torch.tensor(2.5, dtype=torch.float64),
    }


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return bytes(a.reshape(-1).contiguous().view(torch.uint8).numpy()) == bytes(
        b.reshape(-1).contiguous().view(torch.uint8).numpy()
    )


def test_torch_round_trip_keeps_dtypes_and_bits(tmp_path: Path, grads: np.ndarray) -> None:
    tensors = _torch_tensors(grads)
    path = tmp_path / "model.safetensors.lmgc"
    lpt.save_file(tensors, path, metadata={"format": "pt"})
    back = lpt.load_file(path)
    assert sorted(back) == sorted(tensors)
    for name, value in tensors.items():
        assert _same(back[name], value), name
    assert back["layer.weight"].dtype == torch.bfloat16  # no float32 detour
    with safe_open(path, framework="pt") as f:
        assert f.metadata() == {"format": "pt"}
        assert set(f.keys()) == set(tensors)


def test_saved_archive_decompresses_to_a_real_safetensors_file(
    tmp_path: Path, grads: np.ndarray
) -> None:
    tensors = _torch_tensors(grads)
    path = tmp_path / "w.lmgc"
    lpt.save_file(tensors, path, metadata={"k": "v"})
    decompress_path(path, tmp_path / "w.safetensors")
    real = safetensors.torch.load_file(tmp_path / "w.safetensors")
    assert sorted(real) == sorted(tensors)
    assert all(_same(real[k], tensors[k]) for k in tensors)
    out = lmgc("decompress", path, "-o", tmp_path / "cli.safetensors")
    assert "identical to the source" in out.stdout
    assert (tmp_path / "cli.safetensors").read_bytes() == (tmp_path / "w.safetensors").read_bytes()
    # laid out as the package lays them out (widest dtype first): the very bytes it writes
    safetensors.torch.save_file(tensors, tmp_path / "ref.safetensors", metadata={"k": "v"})
    assert (tmp_path / "w.safetensors").read_bytes() == (tmp_path / "ref.safetensors").read_bytes()


def test_numpy_save_file_writes_the_package_s_bytes(tmp_path: Path) -> None:
    """Every dtype both hold, in the safetensors package's order (not by name, which left
    tensors unaligned), so the rebuilt file is byte for byte ``safetensors.numpy.save_file``'s."""
    kinds = [np.bool_, np.uint8, np.int8, np.int16, np.uint16, np.float16, ml_dtypes.bfloat16]
    kinds += [np.int32, np.uint32, np.float32, np.complex64, np.float64, np.int64, np.uint64]
    kinds += [ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e5m2, ml_dtypes.float8_e8m0fnu]
    kinds += [ml_dtypes.float8_e4m3fnuz, ml_dtypes.float8_e5m2fnuz]
    tensors = {f"t{len(kinds) - i:02d}": np.ones(3, dtype=k) for i, k in enumerate(kinds)}
    tensors["poids.é/中"] = np.zeros(2, np.float32)  # raw UTF-8 in the header, not \u escapes
    lnp.save_file(tensors, tmp_path / "w.lmgc", metadata={"k": "v"})
    decompress_path(tmp_path / "w.lmgc", tmp_path / "w.safetensors")
    safetensors.numpy.save_file(tensors, tmp_path / "ref.safetensors", metadata={"k": "v"})
    assert (tmp_path / "w.safetensors").read_bytes() == (tmp_path / "ref.safetensors").read_bytes()


def test_numpy_round_trip_is_bit_exact(tmp_path: Path, grads: np.ndarray) -> None:
    weird = np.array([np.nan, -0.0, np.inf, 1e-45], dtype=np.float32)
    weird.view(np.uint32)[0] = 0x7FC12345  # a NaN payload
    arrays = {
        "g": grads[:2048].reshape(32, 64),
        "bf": grads[:256].astype(ml_dtypes.bfloat16),
        "weird": weird,
        "big_endian": grads[:10].astype(">f4"),
        "u8": np.arange(200, dtype=np.uint8),
    }
    path = tmp_path / "a.lmgc"
    lnp.save_file(arrays, path)
    back = lnp.load_file(path)
    for name, arr in arrays.items():
        want = arr.astype(arr.dtype.newbyteorder("<")) if arr.dtype.byteorder == ">" else arr
        assert back[name].dtype == want.dtype and back[name].shape == want.shape, name
        assert back[name].tobytes() == want.tobytes(), name


def test_archives_of_lmgc_compress_load_through_the_api(tmp_path: Path, grads: np.ndarray) -> None:
    tensors = _torch_tensors(grads)
    src = tmp_path / "real.safetensors"
    safetensors.torch.save_file(tensors, src, metadata={"m": "1"})
    # small chunks: tensors span several members
    lmgc("compress", src, "-o", tmp_path / "real.lmgc", "--chunk-size", "1024", "-q")
    back = lpt.load_file(tmp_path / "real.lmgc")
    assert all(_same(back[k], tensors[k]) for k in tensors)
    arrays = lnp.load_file(tmp_path / "real.lmgc")
    want = safetensors.numpy.load_file(src)
    assert all(arrays[k].tobytes() == want[k].tobytes() for k in want)
    with safe_open(tmp_path / "real.lmgc", framework="np") as f:
        assert f.metadata() == {"m": "1"}


def test_get_tensor_reads_only_that_tensors_members(tmp_path: Path, grads: np.ndarray) -> None:
    arrays = {"big": grads.reshape(64, 128), "small": grads[:100]}
    src = tmp_path / "x.safetensors"
    safetensors.numpy.save_file(arrays, src)
    lmgc("compress", src, "-o", tmp_path / "x.lmgc", "--chunk-size", "4096", "-q")
    with safe_open(tmp_path / "x.lmgc", framework="np") as f:
        read: list[str] = []
        original = f._reader.read_member
        f._reader.read_member = lambda name: read.append(name) or original(name)  # type: ignore
        small = f.get_tensor("small")
        assert read == [m for e in f._reader.entries if e.name == "small" for m in e.members]
        assert small.tobytes() == arrays["small"].tobytes()
        read.clear()
        assert f.get_tensor("big").tobytes() == arrays["big"].tobytes()
        assert len(read) == 8  # 32 KiB in 4 KiB chunks


def _corrupt_member(path: Path, member_prefix: str) -> None:
    with zipfile.ZipFile(path) as zf:
        info = next(i for i in zf.infolist() if i.filename.startswith(member_prefix))
    data = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    data[start + info.file_size - 5] ^= 0x10
    path.write_bytes(bytes(data))


def test_a_corrupt_tensor_is_named_and_the_others_still_load(
    tmp_path: Path, grads: np.ndarray
) -> None:
    path = tmp_path / "c.lmgc"
    lnp.save_file({"good": grads[:500], "bad": grads[500:1500]}, path)
    _corrupt_member(path, "bad")
    with safe_open(path, framework="np") as f:
        assert f.get_tensor("good").tobytes() == grads[:500].tobytes()
        with pytest.raises(LMGCError, match="tensor 'bad'"):
            f.get_tensor("bad")
    with pytest.raises(LMGCError, match="tensor 'bad'"):
        lpt.load_file(path)


def test_a_missing_tensor_is_named(tmp_path: Path, grads: np.ndarray) -> None:
    path = tmp_path / "m.lmgc"
    lnp.save_file({"a": grads[:10]}, path)
    with safe_open(path, framework="pt") as f:
        with pytest.raises(TensorError, match="'nope'"):
            f.get_tensor("nope")
        with pytest.raises(KeyError):
            f.get_tensor("nope")


def test_bad_inputs_are_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="tensor 'x'"):
        lpt.save_file({"x": np.zeros(3)}, tmp_path / "t.lmgc")
    with pytest.raises(TypeError, match="metadata"):
        lnp.save_file({"x": np.zeros(3)}, tmp_path / "t.lmgc", metadata={"a": 1})  # type: ignore
    (tmp_path / "junk.lmgc").write_bytes(b"not an archive at all")
    with pytest.raises(LMGCError):
        safe_open(tmp_path / "junk.lmgc")
    with pytest.raises(ValueError, match="framework"):
        safe_open(tmp_path / "junk.lmgc", framework="tf")


def test_torch_views_are_resolved_and_tensors_without_values_refused(tmp_path):
    """A conjugate or negative view holds valid values but raised torch's RuntimeError; a
    sparse or meta tensor raised torch's own errors instead of the TypeError naming it."""
    import lmgc_core.safetensors.torch as lst

    conj = torch.tensor([1 + 2j, -3 - 4j], dtype=torch.complex64).conj()
    neg = torch._neg_view(torch.arange(4, dtype=torch.float32))
    lst.save_file({"c": conj, "n": neg}, tmp_path / "v.safetensors")
    back = lst.load_file(tmp_path / "v.safetensors")
    assert torch.equal(back["c"], conj.resolve_conj())
    assert torch.equal(back["n"], -torch.arange(4.0))
    for name, t in (("s", torch.eye(3).to_sparse()), ("m", torch.empty(3, device="meta"))):
        with pytest.raises(TypeError, match=f"tensor '{name}': .* no dense values"):
            lst.save_file({name: t}, tmp_path / f"{name}.safetensors")


def test_a_torch_archive_gives_every_dtype_back_as_itself(tmp_path: Path) -> None:
    """complex128 and the float8 variants of a torch.save file came back from safe_open as
    flat uint8 tensors (a table of numpy names lacked them), with no warning."""
    kinds = [torch.complex128, torch.float8_e4m3fnuz, torch.float8_e5m2fnuz]
    kinds += [torch.float8_e8m0fnu, torch.float8_e4m3fn, torch.bfloat16, torch.uint16]
    values = {str(k): torch.ones(3, 4).to(k) for k in kinds}
    torch.save(values, tmp_path / "ckpt.pt")
    lmgc("compress", "-q", tmp_path / "ckpt.pt")
    back = lpt.load_file(tmp_path / "ckpt.pt.lmgc")
    for name, value in values.items():
        assert back[name].dtype == value.dtype and back[name].shape == value.shape, name
        assert _same(back[name], value), name


def test_a_manifest_declaring_a_huge_tensor_is_refused_before_allocating(tmp_path: Path) -> None:
    """get_tensor made a buffer of the manifest's byte count before decoding anything: a small
    archive declaring an exabyte tensor ended in numpy's MemoryError, not lmgc's error."""
    path = tmp_path / "h.safetensors.lmgc"
    lnp.save_file({"a": np.ones((64, 64), np.float32)}, path)
    with zipfile.ZipFile(path) as zf:
        members = {i.filename: zf.read(i) for i in zf.infolist()}
    manifest = json.loads(members["__lmgc__.json"])
    manifest["chunk_bytes"] = 2**62
    manifest["tensors"][0].update(shape=[2**30, 2**28], nbytes=2**60)
    members["__lmgc__.json"] = json.dumps(manifest).encode()
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    with safe_open(path, framework="np") as f, pytest.raises(LMGCError, match=r"declares float32"):
        f.get_tensor("a")


def test_an_npz_array_torch_cannot_hold_is_refused_under_pt(tmp_path: Path) -> None:
    """Strings, dates and records of an .npz came back under framework='pt' as flat uint8
    tensors of their bytes (24 items for two '<U3' strings, which get_slice says are 2)."""
    numbers = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.savez(tmp_path / "m.npz", names=np.array(["ab", "cde"]), w=numbers)
    lmgc("compress", "-q", tmp_path / "m.npz")
    with safe_open(tmp_path / "m.npz.lmgc", framework="pt") as f:
        assert torch.equal(f.get_tensor("w"), torch.from_numpy(numbers))
        with pytest.raises(LMGCError, match=r"tensor 'names': torch has no dtype for <U3"):
            f.get_tensor("names")
    with safe_open(tmp_path / "m.npz.lmgc", framework="np") as f:
        assert f.get_tensor("names").tolist() == ["ab", "cde"]


def test_torch_views_of_one_storage_are_read_by_name(tmp_path: Path) -> None:
    """A tensor sharing its storage with a view was held only as the storage (data/<key>), and
    asking for it by name said "no tensor named 'base'" (then pointed at data/0); since archive
    version 4 the views are listed with their storage and read by name. A view that is not
    kept (here one bigger than its storage: an ``expand``) still points at the storage."""
    base = torch.arange(24.0).reshape(6, 4)
    saved = {"base": base, "rows": base[2:4], "w": torch.ones(3), "big": torch.ones(1).expand(9)}
    torch.save(saved, tmp_path / "v.pt")
    lmgc("compress", "-q", tmp_path / "v.pt")
    with safe_open(tmp_path / "v.pt.lmgc") as f:
        assert f.keys() == ["data/0", "base", "rows", "w", "data/2"]
        for name in ("base", "rows", "w"):
            assert torch.equal(f.get_tensor(name), saved[name]), name
        assert f.get_slice("rows").get_shape() == [2, 4]
        assert torch.equal(f.get_slice("rows")[1], base[3])
        with pytest.raises(TensorError, match=r"'big'.* view part of a storage.*data/2"):
            f.get_tensor("big")
