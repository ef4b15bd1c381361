"""``lmgc compress NEW --base OLD`` / ``lmgc decompress NEW.lmgc --base OLD`` (issue 21) on real
checkpoints: a small model trained with AdamW in ``tmp_path``, saved after k and k+1 steps as
torch.save, safetensors, npz (stored and deflated) and npy; byte-identical round trips, what the
manifest says, and the refusals (missing, other, truncated base: exit 2, nothing written)."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

import lmgc_core
from lmgc_core import MismatchError
from tests.cli_helpers import lmgc, one_error_line

torch = pytest.importorskip("torch")


def _train(steps: int) -> dict[str, object]:
    """Model and AdamW state after ``steps`` steps (the same run for every ``steps``)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.GELU(), torch.nn.Linear(256, 64))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(16, 64, generator=gen)
        loss = (model(x) - x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": steps}


def _flat(ckpt: dict[str, object]) -> dict[str, np.ndarray]:
    """Weights and AdamW moments as named float32 arrays (exp_avg / exp_avg_sq per parameter)."""
    out = {f"model.{k}": v.numpy() for k, v in ckpt["model"].items()}  # type: ignore[attr-defined]
    for i, state in ckpt["optimizer"]["state"].items():  # type: ignore[index]
        out[f"opt.{i}.exp_avg"] = state["exp_avg"].numpy()
        out[f"opt.{i}.exp_avg_sq"] = state["exp_avg_sq"].numpy()
    return out


def _write(fmt: str, ckpt: dict[str, object], path: Path) -> Path:
    if fmt == "pt":
        torch.save(ckpt, path)
    elif fmt == "safetensors":
        from safetensors.numpy import save_file

        save_file(_flat(ckpt), str(path))
    elif fmt == "npz":
        np.savez(path, **_flat(ckpt))
    elif fmt == "npz-deflated":
        np.savez_compressed(path, **_flat(ckpt))
    elif fmt == "npy":
        np.save(path, _flat(ckpt)["model.0.weight"])
    return path


SUFFIX = {
    "pt": ".pt",
    "safetensors": ".safetensors",
    "npz": ".npz",
    "npz-deflated": ".npz",
    "npy": ".npy",
}


@pytest.fixture(scope="module")
def checkpoints() -> tuple[dict[str, object], dict[str, object]]:
    return _train(20), _train(21)


def _pair(tmp_path: Path, fmt: str, checkpoints) -> tuple[Path, Path]:  # type: ignore[no-untyped-def]
    old = _write(fmt, checkpoints[0], tmp_path / f"old{SUFFIX[fmt]}")
    new = _write(fmt, checkpoints[1], tmp_path / f"new{SUFFIX[fmt]}")
    return old, new


def _manifest(path: Path) -> dict:  # type: ignore[type-arg]
    with zipfile.ZipFile(path) as z:
        return json.loads(z.read("__lmgc__.json"))


@pytest.mark.parametrize("fmt", list(SUFFIX))
def test_round_trip_with_base_is_byte_identical(tmp_path: Path, fmt: str, checkpoints) -> None:  # type: ignore[no-untyped-def]
    old, new = _pair(tmp_path, fmt, checkpoints)
    alone = tmp_path / "alone.lmgc"
    packed = tmp_path / "new.lmgc"
    lmgc("compress", new, "-o", alone, "-q")
    lmgc("compress", new, "--base", old, "-o", packed, "-q")
    back = tmp_path / "back"
    lmgc("decompress", packed, "--base", old, "-o", back, "-q")
    assert back.read_bytes() == new.read_bytes()
    manifest = _manifest(packed)
    assert manifest["lmgc_archive"] >= 3
    assert manifest["base"]["name"] == old.name
    assert manifest["base"]["size"] == old.stat().st_size
    assert manifest["base"]["sha256"] == hashlib.sha256(old.read_bytes()).hexdigest()
    against = {t["name"]: t.get("base") for t in manifest["tensors"] if not t.get("bytes")}
    assert all(v in (None, k) for k, v in against.items()), against  # small ones: the smaller
    used = {k for k, v in against.items() if v is not None}
    if fmt == "npy":  # the one nameless array
        assert used == {""}, against
    else:
        assert any("0.weight" in k for k in used) and any("2.weight" in k for k in used), against
    if fmt == "pt":  # AdamW's moments are matched by the names lmgc derives for the storages
        assert sum(k.startswith("optimizer") for k in used) >= 2, against
    assert packed.stat().st_size < alone.stat().st_size


def test_archive_without_base_is_unchanged_and_ignores_one(tmp_path: Path, checkpoints) -> None:  # type: ignore[no-untyped-def]
    old, new = _pair(tmp_path, "safetensors", checkpoints)
    packed = tmp_path / "new.lmgc"
    lmgc("compress", new, "-o", packed, "-q")
    manifest = _manifest(packed)
    assert "base" not in manifest and all("base" not in t for t in manifest["tensors"])
    back = tmp_path / "back.safetensors"
    result = lmgc("decompress", packed, "--base", old, "-o", back, "-q")
    assert "not coded against a base" in result.stderr
    assert back.read_bytes() == new.read_bytes()


def test_unmatched_tensors_are_coded_alone(tmp_path: Path, checkpoints) -> None:  # type: ignore[no-untyped-def]
    from safetensors.numpy import save_file

    flat_old, flat_new = _flat(checkpoints[0]), _flat(checkpoints[1])
    flat_old.pop("model.2.bias")  # no match by name
    flat_old["model.0.bias"] = flat_old["model.0.bias"][:-1]  # another shape
    flat_old["model.2.weight"] = flat_old["model.2.weight"].astype(np.float64)  # another dtype
    flat_new["extra"] = np.arange(5, dtype=np.float32)  # only in NEW
    save_file(flat_old, str(old := tmp_path / "old.safetensors"))
    save_file(flat_new, str(new := tmp_path / "new.safetensors"))
    packed = tmp_path / "new.lmgc"
    lmgc("compress", new, "--base", old, "-o", packed, "-q")
    against = {t["name"]: t.get("base") for t in _manifest(packed)["tensors"]}
    alone = {k for k, v in against.items() if v is None}
    assert {"model.2.bias", "model.0.bias", "model.2.weight", "extra"} <= alone
    assert against["model.0.weight"] == "model.0.weight"
    with zipfile.ZipFile(packed) as z:  # the streams say the same
        for t in _manifest(packed)["tensors"]:
            header = lmgc_core.read_header(z.read(t["members"][0]))
            assert ("base" in header) == (t.get("base") is not None), t["name"]
    back = tmp_path / "back.safetensors"
    lmgc("decompress", packed, "--base", old, "-o", back, "-q")
    assert back.read_bytes() == new.read_bytes()
    doc = json.loads(lmgc("info", "--json", packed).stdout)
    assert doc["base"]["name"] == "old.safetensors"
    assert {m["name"]: m["base"] for m in doc["members"]} == against
    assert "  base       old.safetensors (" in lmgc("info", packed).stdout


def test_a_base_no_tensor_was_coded_against_is_not_needed(tmp_path: Path) -> None:
    """Every tensor renamed: all are coded alone, and the archive no longer records the base
    (its decode had asked for it all the same)."""
    from safetensors.numpy import save_file

    w = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    save_file({"old.weight": w}, str(old := tmp_path / "old.safetensors"))
    save_file({"new.weight": w * np.float32(1.001)}, str(new := tmp_path / "new.safetensors"))
    packed = tmp_path / "new.lmgc"
    lmgc("compress", new, "--base", old, "-o", packed, "-q")
    assert "base" not in _manifest(packed)
    back = tmp_path / "back.safetensors"
    lmgc("decompress", packed, "-o", back, "-q")  # no --base
    assert back.read_bytes() == new.read_bytes()


def test_the_base_is_read_as_its_own_format(tmp_path: Path) -> None:
    """NEW's --format and --dtype were applied to the base: a .safetensors base of an .npy
    with --format npy was refused, and an .npy base of a raw NEW was read as raw, its header
    as values. A raw base takes --dtype (with --format for a NEW that is not raw)."""
    from safetensors.numpy import save_file

    a = np.random.default_rng(0).standard_normal(8192).astype(np.float32)
    np.save(new := tmp_path / "new.npy", a * np.float32(1.001))
    save_file({"": a}, str(old := tmp_path / "old.safetensors"))
    np.save(old_npy := tmp_path / "old.npy", a)
    a.tofile(old_raw := tmp_path / "old.raw")
    (a * np.float32(1.001)).tofile(new_raw := tmp_path / "new.raw")
    cases = [
        (new, old, ["--format", "npy"]),
        (new_raw, old_npy, ["--dtype", "float32"]),
        (new, old_raw, ["--format", "npy", "--dtype", "float32"]),
    ]
    for src, base, options in cases:
        packed = tmp_path / "x.lmgc"
        lmgc("compress", src, "--base", base, *options, "-o", packed, "-q", "-f")
        assert _manifest(packed)["base"]["format"] == base.suffix[1:]
        back = tmp_path / ("back" + src.suffix)
        lmgc("decompress", packed, "--base", base, "-o", back, "-q", "-f")
        assert back.read_bytes() == src.read_bytes()


def test_chunked_tensors_match_chunk_by_chunk(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    base = rng.standard_normal((64, 100)).astype(np.float32)
    new = base + rng.standard_normal(base.shape).astype(np.float32) * 1e-5
    np.save(old := tmp_path / "old.npy", base)
    np.save(path := tmp_path / "new.npy", new)
    packed = tmp_path / "new.lmgc"
    lmgc("compress", path, "--base", old, "--chunk-size", "4096", "-o", packed, "-q")
    (entry,) = _manifest(packed)["tensors"]
    assert len(entry["members"]) > 3 and entry["base"] == ""
    back = tmp_path / "back.npy"
    lmgc("decompress", packed, "--base", old, "-o", back, "-q")
    assert back.read_bytes() == path.read_bytes()


def _refused(result, out: Path, *words: str) -> None:  # type: ignore[no-untyped-def]
    line = one_error_line(result, 2)
    for word in words:
        assert word in line, line
    assert not out.exists()


def test_decompress_refuses_missing_other_and_truncated_base(tmp_path: Path, checkpoints) -> None:  # type: ignore[no-untyped-def]
    old, new = _pair(tmp_path, "safetensors", checkpoints)
    packed = tmp_path / "new.lmgc"
    lmgc("compress", new, "--base", old, "-o", packed, "-q")
    out = tmp_path / "out.safetensors"
    _refused(lmgc("decompress", packed, "-o", out, ok=False), out, "old.safetensors", "--base")
    _refused(
        lmgc("decompress", packed, "--base", new, "-o", out, ok=False),
        out,
        "is not the base",
        "old.safetensors",
    )
    # the two files side by side, by size and by the same hash (it gave an XXH3-128 beside a
    # SHA-256, which cannot be compared, and left the size out when it matched)
    line = one_error_line(lmgc("decompress", packed, "--base", new, "-o", out, ok=False), 2)
    given, recorded = line.split("is not the base")
    assert f"({new.stat().st_size} bytes, XXH3-128 " in given, line
    assert f"({old.stat().st_size} bytes, XXH3-128 " in recorded, line
    (cut := tmp_path / "cut.safetensors").write_bytes(old.read_bytes()[:-7])
    _refused(
        lmgc("decompress", packed, "--base", cut, "-o", out, ok=False),
        out,
        f"{cut.stat().st_size} bytes",
        "is not the base",
    )
    _refused(
        lmgc("decompress", packed, "--base", tmp_path / "gone", "-o", out, ok=False),
        out,
        "does not exist",
    )


def test_compress_refuses_missing_truncated_base_and_priors_without_deltas(
    tmp_path: Path,
    checkpoints,  # type: ignore[no-untyped-def]
) -> None:
    old, new = _pair(tmp_path, "safetensors", checkpoints)
    out = tmp_path / "new.lmgc"
    _refused(
        lmgc("compress", new, "--base", tmp_path / "gone", "-o", out, ok=False),
        out,
        "does not exist",
    )
    (cut := tmp_path / "cut.safetensors").write_bytes(old.read_bytes()[:4000])
    _refused(lmgc("compress", new, "--base", cut, "-o", out, ok=False), out, "--base")
    _refused(
        lmgc("compress", new, "--base", old, "--prior", "adaptive", "-o", out, ok=False),
        out,
        "delta",
    )


def test_a_member_alone_decodes_with_its_base_chunk(tmp_path: Path, checkpoints) -> None:  # type: ignore[no-untyped-def]
    """Every member stays a plain stream: lmgc_core.decompress with the base array."""
    old, new = _pair(tmp_path, "npz", checkpoints)
    packed = tmp_path / "new.lmgc"
    lmgc("compress", new, "--base", old, "-o", packed, "-q")
    manifest = _manifest(packed)
    entry = next(t for t in manifest["tensors"] if t["name"] == "model.0.weight")
    with zipfile.ZipFile(packed) as z:
        blob = z.read(entry["members"][0])
    base = np.load(old)["model.0.weight"]
    want = np.load(new)["model.0.weight"].tobytes()
    assert lmgc_core.decompress(blob, base=base).tobytes() == want
    with pytest.raises(MismatchError, match=r"model\.0\.weight@0"):
        lmgc_core.decompress(blob)


def _folder(root: Path, ckpt: dict[str, object]) -> Path:
    from safetensors.numpy import save_file

    root.mkdir()
    save_file(_flat(ckpt), str(root / "model.safetensors"))
    torch.save(ckpt, root / "training_state.pt")
    (root / "config.json").write_text('{"hidden": 256}\n')
    return root


def test_folder_against_a_base_folder_file_by_file(tmp_path: Path, checkpoints) -> None:  # type: ignore[no-untyped-def]
    old = _folder(tmp_path / "old", checkpoints[0])
    new = _folder(tmp_path / "new", checkpoints[1])
    np.save(new / "extra.npy", np.arange(10.0))  # no file of that name in OLD: coded alone
    packed, back = tmp_path / "packed", tmp_path / "back"
    lmgc("compress", new, "--base", old, "-o", packed, "-q")
    assert _manifest(packed / "model.safetensors.lmgc")["base"]["name"] == "model.safetensors"
    assert _manifest(packed / "training_state.pt.lmgc")["base"]["name"] == "training_state.pt"
    assert json.loads(lmgc("info", "--json", packed / "extra.npy.lmgc").stdout)["base"] is None
    out = tmp_path / "out"
    _refused(lmgc("decompress", packed, "-o", out, ok=False), out, "model.safetensors", "--base")
    other = _folder(tmp_path / "other", checkpoints[1])
    _refused(
        lmgc("decompress", packed, "--base", other, "-o", out, ok=False), out, "is not the base"
    )
    _refused(
        lmgc("decompress", packed, "--base", old / "config.json", "-o", out, ok=False),
        out,
        "must be a folder",
    )
    lmgc("decompress", packed, "--base", old, "-o", back, "-q")
    for name in ("model.safetensors", "training_state.pt", "config.json", "extra.npy"):
        assert (back / name).read_bytes() == (new / name).read_bytes(), name


def test_fortran_and_noted_dtypes_match_through_their_coding_views(tmp_path: Path) -> None:
    """Fortran order, complex, bool, datetime: OLD's chunk takes the same view as NEW's."""
    rng = np.random.default_rng(5)
    w = rng.standard_normal((40, 30)).astype(np.float32)
    arrays = {
        "fortran": np.asfortranarray(w),
        "complex": (w + 1j * w.T.copy().T).astype(np.complex64),
        "mask": w > 0,
        "times": (np.datetime64("2026-01-01") + np.arange(1200)).reshape(40, 30),
    }
    old = tmp_path / "old.npz"
    np.savez(old, **arrays)
    moved = {
        k: (v + np.float32(1e-4) * v if v.dtype.kind in "fc" else v) for k, v in arrays.items()
    }
    moved["fortran"] = np.asfortranarray(moved["fortran"])
    new = tmp_path / "new.npz"
    np.savez(new, **moved)
    packed = tmp_path / "new.lmgc"
    lmgc("compress", new, "--base", old, "-o", packed, "-q")
    back = tmp_path / "back.npz"
    lmgc("decompress", packed, "--base", old, "-o", back, "-q")
    assert back.read_bytes() == new.read_bytes()
    against = {t["name"]: t.get("base") for t in _manifest(packed)["tensors"]}
    assert against["fortran"] == "fortran" and against["complex"] == "complex", against


def test_a_base_no_tensor_matches_is_said(tmp_path: Path) -> None:
    """A .npy against a .safetensors base (no tensor of one name) was coded alone in silence."""
    import safetensors.numpy

    np.save(tmp_path / "new.npy", np.ones(100, np.float32))
    safetensors.numpy.save_file({"w": np.ones(100, np.float32)}, tmp_path / "old.safetensors")
    done = lmgc("compress", tmp_path / "new.npy", "--base", tmp_path / "old.safetensors")
    assert "warning: no tensor matches one of the base 'old.safetensors'" in done.stderr
    assert (tmp_path / "new.npy.lmgc").read_bytes()[:4] == b"LMGC"  # the compact form, no zip
    lmgc("decompress", tmp_path / "new.npy.lmgc", "-o", tmp_path / "back.npy")  # no --base
    assert (tmp_path / "back.npy").read_bytes() == (tmp_path / "new.npy").read_bytes()


def _npy(path: Path, seed: int, n: int = 4000) -> Path:
    rng = np.random.default_rng(seed)
    np.save(path, rng.standard_normal(n).astype(np.float32))
    return path


def test_inputs_that_would_make_an_undecodable_chain_are_refused(tmp_path: Path) -> None:
    """``--series d d`` coded the second d against the first (itself) and replaced the first's
    archive; ``--series a b --base b`` made a chain that comes back to itself. Both exit 0,
    and no archive of them decoded. One file under two names, and a plain --base that is the
    input itself, stay allowed (the review of the first fix found them refused)."""
    import os

    a, b = _npy(tmp_path / "a.npy", 0), _npy(tmp_path / "b.npy", 1)
    cases = [
        (["--series", a, a], "is listed twice"),
        (["--series", a, b, a], "is listed twice"),
        (["--series", a, b, "--base", b], "which this series compresses"),
    ]
    for args, words in cases:
        assert words in one_error_line(lmgc("compress", "-f", *args, ok=False), 2)
        assert not list(tmp_path.glob("*.lmgc")), args  # refused before anything is written
    os.link(a, tmp_path / "same.npy")
    lmgc("compress", a, tmp_path / "same.npy")  # one file, two names: two archives
    result = lmgc("compress", "-f", a, "--base", tmp_path / "same.npy", "-o", tmp_path / "x.lmgc")
    assert "decoding it needs that very file" in result.stderr
    lmgc("decompress", tmp_path / "x.lmgc", "--base", a, "-o", tmp_path / "back.npy")
    assert (tmp_path / "back.npy").read_bytes() == a.read_bytes()


def test_a_series_with_a_prior_without_deltas_writes_nothing(tmp_path: Path) -> None:
    a, b = _npy(tmp_path / "a.npy", 0), _npy(tmp_path / "b.npy", 1)
    line = one_error_line(lmgc("compress", "--series", "--prior", "adaptive", a, b, ok=False), 2)
    assert "cannot code against a base" in line
    assert not list(tmp_path.glob("*.lmgc"))


def test_a_base_that_is_no_regular_file_or_an_archive_is_refused(tmp_path: Path) -> None:
    import os

    new = _npy(tmp_path / "new.npy", 0)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)  # hashing it waited for a writer; /dev/zero was hashed forever
    for base, words in ((fifo, "is not a regular file"), (Path("/dev/zero"), "not a regular")):
        assert words in one_error_line(lmgc("compress", new, "--base", base, ok=False), 2)
    old = _npy(tmp_path / "old.npy", 1)
    lmgc("compress", old)
    line = one_error_line(lmgc("compress", new, "--base", f"{old}.lmgc", ok=False), 2)
    assert "is an lmgc archive" in line  # it was read as raw values ('needs --dtype')


def test_a_base_written_to_while_it_is_read_is_refused(tmp_path: Path, monkeypatch) -> None:
    """np.save / torch.save to the base's path while NEW is coded: the archive recorded the old
    bytes' hash and held deltas against the new ones, and decoded with neither (exit 0)."""
    import os

    from lmgc_core.files import base_file

    old = _npy(tmp_path / "old.npy", 1)
    new = tmp_path / "new.npy"
    np.save(new, np.load(old) + np.float32(1e-3))
    chunk = base_file.BaseFile.chunk

    def chunk_then_rewrite(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        data = chunk(self, *args, **kwargs)
        _npy(old, 2)  # the same size, other values, a later mtime
        os.utime(old, ns=(os.stat(old).st_atime_ns, os.stat(old).st_mtime_ns + 10**9))
        return data

    monkeypatch.setattr(base_file.BaseFile, "chunk", chunk_then_rewrite)
    line = one_error_line(lmgc("compress", new, "--base", old, ok=False), 2)
    assert "changed while it was read" in line
    assert not (tmp_path / "new.npy.lmgc").exists()


def test_a_stream_the_api_coded_against_an_array_decodes_with_base(tmp_path: Path) -> None:
    """The error said 'decode it with that base (--base)', and --base was then ignored."""
    old = np.random.default_rng(0).standard_normal(3000).astype(np.float32)
    new = old + np.float32(1e-4)
    (tmp_path / "new.lmgc").write_bytes(lmgc_core.compress(new, base=old))
    np.save(tmp_path / "old.npy", old)
    lmgc("decompress", tmp_path / "new.lmgc", "--base", tmp_path / "old.npy", "-o",
         tmp_path / "back.npy")  # fmt: skip
    assert np.load(tmp_path / "back.npy").tobytes() == new.tobytes()
    np.save(tmp_path / "other.npy", new)
    result = lmgc("decompress", tmp_path / "new.lmgc", "--base", tmp_path / "other.npy", "-o",
                  tmp_path / "x.npy", ok=False)  # fmt: skip
    assert result.exit_code != 0 and not (tmp_path / "x.npy").exists()


def test_a_deflated_base_is_read_once_in_file_order(tmp_path: Path, monkeypatch) -> None:
    """Each tensor of a deflated .npz base inflated every member before it again: quadratic
    (240 tensors: 16.6 s against 1.7 s stored)."""
    from lmgc_core.files import base_file

    rng = np.random.default_rng(0)
    old = {f"t{k:02d}": rng.standard_normal(2000).astype(np.float32) for k in range(20)}
    np.savez_compressed(tmp_path / "old.npz", **old)
    np.savez(tmp_path / "new.npz", **{k: v + np.float32(1e-4) for k, v in old.items()})
    walked: list[int] = []
    streams = base_file.tensor_streams

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        for found, stream in streams(*args, **kwargs):
            walked.append(found)
            yield found, stream

    monkeypatch.setattr(base_file, "tensor_streams", counting)
    lmgc("compress", tmp_path / "new.npz", "--base", tmp_path / "old.npz", "-j", "1")
    assert len(walked) <= 2 * len(old), len(walked)  # once each, not 1 + 2 + ... + 20
    lmgc("decompress", tmp_path / "new.npz.lmgc", "--base", tmp_path / "old.npz", "-o",
         tmp_path / "back.npz")  # fmt: skip
    assert (tmp_path / "back.npz").read_bytes() == (tmp_path / "new.npz").read_bytes()
