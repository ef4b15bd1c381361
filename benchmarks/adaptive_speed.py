"""Throughput and rate of the built-in adaptive prior on real gradients (issue: >= 5 MB/s).

    python benchmarks/adaptive_speed.py [path/to/grads.npy] [--repeat 3]

Defaults to ../shared/data/mlp_digits_grads.npy (7 x 85,002 float32), falling back to the
committed slice in tests/data. Prints MB/s for compress and decompress (best of --repeat),
the compression rate, and gzip/lzma of the same bytes. Every decode is compared bit for bit.
"""

from __future__ import annotations

import argparse
import gzip
import lzma
import time
from pathlib import Path

import numpy as np

from lmgc_core import Pipeline, decompress

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = ROOT.parent / "shared" / "data" / "mlp_digits_grads.npy"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("path", nargs="?", default=str(DEFAULT))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--serializer", default="hex")
    args = ap.parse_args()
    path = Path(args.path)
    if not path.exists():
        path = ROOT / "tests" / "data" / "mlp_grads_8k.npy"
    data = np.load(path)
    raw = data.tobytes()
    pipe = Pipeline.from_config({"serializer": args.serializer, "prior": "adaptive"})
    enc_times, dec_times = [], []
    for _ in range(args.repeat):
        t = time.perf_counter()
        blob = pipe.compress(data)
        enc_times.append(time.perf_counter() - t)
        t = time.perf_counter()
        back = decompress(blob)
        dec_times.append(time.perf_counter() - t)
        assert back.tobytes() == raw, "round trip is not bit-exact"
    mb = len(raw) / 1e6
    print(f"data: {path.name} {data.shape} {data.dtype}, {len(raw)} bytes")
    print(
        f"adaptive/{args.serializer}: rate {100 * len(blob) / len(raw):.2f}%  "
        f"compress {mb / min(enc_times):.2f} MB/s  decompress {mb / min(dec_times):.2f} MB/s"
    )
    print(
        f"gzip -9: {100 * len(gzip.compress(raw, 9)) / len(raw):.2f}%  "
        f"lzma -9e: {100 * len(lzma.compress(raw, preset=9 | lzma.PRESET_EXTREME)) / len(raw):.2f}%"
    )


if __name__ == "__main__":
    main()
