"""``safe_open(...).get_tensor(name)`` decodes one tensor, not the archive: one small tensor of a
large archive against the whole-file decode (``lmgc decompress``). Target: under 1 %.

Builds a bf16 ``.safetensors`` of about ``--mb`` MB (weights from N(0, 0.02), fixed seed, 2048 x
5632 matrices, plus one 2048-element ``norm.weight`` written in the middle of the file),
compresses it with lmgc's default pipeline, then times (best of ``--repeat``):

* whole: :func:`lmgc_core.files.folders.decompress_path` (what ``lmgc decompress`` does: every
  member decoded, the file rebuilt and its SHA-256 checked);
* one: open the archive with :class:`lmgc_core.safetensors.safe_open` (manifest read and
  checked) and ``get_tensor("norm.weight")``.

    python benchmarks/safe_open.py --mb 1024     # the issue's 1 GB
    python benchmarks/safe_open.py --mb 256 --jobs 2
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import ml_dtypes
import numpy as np

from lmgc_core.files.folders import compress_path, decompress_path
from lmgc_core.files.safetensors_file import header_bytes
from lmgc_core.files.segments import Tensor
from lmgc_core.safetensors import safe_open

HIDDEN, MLP = 2048, 5632
SMALL = "norm.weight"


def tensors_for(mb: float) -> list[Tensor]:
    n = max(1, round(mb * 1e6 / (HIDDEN * MLP * 2)))
    names = [f"layers.{i}.mlp.weight" for i in range(n)]
    names.insert(n // 2, SMALL)
    return [
        Tensor(name, np.dtype(ml_dtypes.bfloat16), (HIDDEN,) if name == SMALL else (MLP, HIDDEN),
               tag="BF16")
        for name in names
    ]  # fmt: skip


def write_source(path: Path, mb: float) -> None:
    tensors = tensors_for(mb)
    rng = np.random.default_rng(0)
    with open(path, "wb") as f:
        f.write(header_bytes(tensors, {"bench": "safe_open"}))
        for t in tensors:
            w = rng.normal(0, 0.02, size=t.shape).astype(np.float32)
            f.write(w.astype(ml_dtypes.bfloat16).tobytes())


def small_bytes(path: Path, mb: float) -> bytes:
    """The small tensor's bytes as they lie in the source file."""
    tensors = tensors_for(mb)
    pos = len(header_bytes(tensors, {"bench": "safe_open"}))
    for t in tensors:
        if t.name == SMALL:
            with open(path, "rb") as f:
                f.seek(pos)
                return f.read(t.nbytes)
        pos += t.nbytes
    raise AssertionError("no small tensor")


def best(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=1024, help="source size in MB (1e6 bytes)")
    parser.add_argument("--jobs", type=int, default=0, help="threads (0: all cores)")
    parser.add_argument("--repeat", type=int, default=3, help="best of N for the one-tensor read")
    parser.add_argument("--dir", default=None, help="work folder (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        src, arc = Path(tmp, "model.safetensors"), Path(tmp, "model.safetensors.lmgc")
        write_source(src, args.mb)
        start = time.perf_counter()
        compress_path(src, arc, jobs=args.jobs)
        took = time.perf_counter() - start
        size, packed = src.stat().st_size, arc.stat().st_size
        print(f"source {size / 1e6:.1f} MB -> archive {packed / 1e6:.1f} MB "
              f"({100 * packed / size:.1f} %), compressed in {took:.1f} s")  # fmt: skip
        want = small_bytes(src, args.mb)
        out = Path(tmp, "back.safetensors")
        whole = best(lambda: decompress_path(arc, out, jobs=args.jobs), 1)
        assert out.read_bytes() == src.read_bytes()
        os.unlink(out)

        def one() -> None:
            with safe_open(arc, framework="np", jobs=args.jobs) as f:
                small = f.get_tensor(SMALL)
            assert small.shape == (HIDDEN,) and small.tobytes() == want

        part = best(one, args.repeat)
        print(f"whole-file decode (lmgc decompress): {whole:.3f} s")
        print(f"safe_open + get_tensor({SMALL!r}, {HIDDEN * 2} bytes): {part * 1e3:.1f} ms")
        ratio = 100 * part / whole
        print(f"ratio: {ratio:.3f} % (target < 1 %): {'PASS' if ratio < 1 else 'FAIL'}")


if __name__ == "__main__":
    main()
