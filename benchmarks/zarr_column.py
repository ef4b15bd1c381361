"""Reading a column of a chunked Zarr v3 array: lmgc (default prior) against zstd and pcodec.

An (8, 100,000) float32 array of real gradients (the shared MLP's 7 snapshots and the start of
``lmgc collect``'s ResNet-18 gradients, concatenated, no value repeated on purpose), one chunk
per row. Reading ``z[:, k]`` must decode all 8
chunks; the issue's target is lmgc <= 10x zstd's time. Each store is written to a temporary
directory, read back in full and compared bit for bit; times are best of ``--repeat`` with
zarr's default thread pool.

    python benchmarks/zarr_column.py
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SHARED_MLP = Path(__file__).resolve().parents[2] / "shared" / "data" / "mlp_digits_grads.npy"


def main() -> None:
    import zarr
    from zarr.codecs import BytesCodec, ZstdCodec
    from zarr.codecs.numcodecs import PCodec

    from lmgc_core.codecs.zarr_codec import LMGCZarrCodec

    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from workloads import load

    resnet = load(["resnet18"])[0].array.reshape(-1)
    flat = np.concatenate([np.load(SHARED_MLP).reshape(-1), resnet])
    data = np.ascontiguousarray(flat[:800_000].reshape(8, 100_000), dtype=np.float32)
    from lmgc_core import Pipeline

    Pipeline.from_config({}).compress(data[:1, :1000])  # load the compiled kernels once
    variants = {
        "lmgc (float prior)": dict(serializer=LMGCZarrCodec(), compressors=None),
        "zstd (level 3)": dict(serializer=BytesCodec(), compressors=[ZstdCodec(level=3)]),
        "pcodec": dict(serializer=PCodec(), compressors=None),
    }
    print(f"load average: {os.getloadavg()[0]:.2f}\n")
    print("| codec | store bytes | rate | write s | read all s | read one column s |")
    print("|---|---:|---:|---:|---:|---:|")
    times = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, kw in variants.items():
            path = Path(tmp) / name.split()[0]
            t = time.perf_counter()
            z = zarr.create_array(str(path), shape=data.shape, chunks=(1, 100_000),
                                  dtype="float32", **kw)  # fmt: skip
            z[...] = data
            t_write = time.perf_counter() - t
            z = zarr.open_array(str(path), mode="r")
            assert z[...].tobytes() == data.tobytes(), name
            t_all = min(_timed(lambda z=z: z[...]) for _ in range(args.repeat))
            t_col = min(_timed(lambda z=z: z[:, 12_345]) for _ in range(args.repeat))
            size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
            times[name] = t_col
            print(f"| {name} | {size:,} | {100 * size / data.nbytes:.2f} % | {t_write:.3f} | "
                  f"{t_all:.4f} | {t_col:.4f} |")  # fmt: skip
    ratio = times["lmgc (float prior)"] / times["zstd (level 3)"]
    print(f"\ncolumn read, lmgc / zstd: {ratio:.1f}x (target <= 10x)")


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


if __name__ == "__main__":
    sys.exit(main())
