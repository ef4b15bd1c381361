"""Per-chunk overhead of the lmgc Zarr v3 codec at 64 KB chunks, next to pcodec and zstd.

A 1-D float32 array of real gradients (the shared MLP's snapshots, ``shared/data/
mlp_digits_grads.npy``, tiled to ``--chunks`` chunks of 16,384 values = 64 KB; every chunk is
coded on its own, so the tiling favours no codec) is written to a temporary store per codec and
read back whole (``z[:]``, compared bit for bit). Printed per codec: bytes per chunk, of which
lmgc's stream header (prefix, deflated header, CRC), and ``z[:]`` time in total and per chunk,
with zarr's default thread pool and with one thread (best of ``--repeat``). Then what one lmgc
chunk costs outside its coding: a 16-value chunk decoded through the codec, and its header
verified and parsed alone.

    python benchmarks/zarr_chunks.py [--chunks 256] [--repeat 5]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

SHARED_MLP = Path(__file__).resolve().parents[2] / "shared" / "data" / "mlp_digits_grads.npy"
CHUNK = 16384  # float32 values: 64 KB


def _best(fn: Any, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _store_bytes(path: Path) -> tuple[int, list[bytes]]:
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.name != "zarr.json")
    blobs = [p.read_bytes() for p in files]
    return sum(len(b) for b in blobs), blobs


def main() -> None:
    import zarr
    from zarr.codecs import BytesCodec, ZstdCodec
    from zarr.codecs.numcodecs import PCodec

    from lmgc_core.codecs.numcodecs_codec import LMGC
    from lmgc_core.codecs.zarr_codec import LMGCZarrCodec
    from lmgc_core.stream import container

    ap = argparse.ArgumentParser()
    ap.add_argument("--chunks", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    flat = np.load(SHARED_MLP).reshape(-1).astype(np.float32)
    reps = -(-args.chunks * CHUNK // flat.size)
    data = np.ascontiguousarray(np.tile(flat, reps)[: args.chunks * CHUNK])
    variants = {
        "lmgc level 1": dict(serializer=LMGCZarrCodec(level=1), compressors=None),
        "lmgc level 2": dict(serializer=LMGCZarrCodec(level=2), compressors=None),
        "pcodec": dict(serializer=PCodec(), compressors=None),
        "zstd level 3": dict(serializer=BytesCodec(), compressors=[ZstdCodec(level=3)]),
    }
    print(
        f"{args.chunks} chunks of {CHUNK} float32 (64 KB), {data.nbytes / 1e6:.1f} MB, "
        f"best of {args.repeat}"
    )
    print(
        f"{'codec':<14} {'bytes/chunk':>11} {'header':>7} {'ratio':>7} "
        f"{'z[:] ms':>8} {'us/chunk':>9} {'1 thread ms':>12} {'us/chunk':>9}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for name, codecs in variants.items():
            path = Path(tmp) / name.replace(" ", "_")
            z = zarr.create_array(path, shape=data.shape, chunks=(CHUNK,), dtype="f4", **codecs)
            z[:] = data
            z = zarr.open_array(path, mode="r")
            assert z[:].tobytes() == data.tobytes(), name
            total, blobs = _store_bytes(path)
            header = "-"
            if name.startswith("lmgc"):
                header = str(round(np.mean([container.read_header(b)[1] for b in blobs])))
            many = _best(lambda z=z: z[:], args.repeat)
            with zarr.config.set({"threading.max_workers": 1}):
                one = _best(lambda z=z: z[:], args.repeat)
            print(
                f"{name:<14} {total / len(blobs):>11.0f} {header:>7} "
                f"{100 * total / data.nbytes:>6.2f}% {1e3 * many:>8.1f} "
                f"{1e6 * many / len(blobs):>9.0f} {1e3 * one:>12.1f} "
                f"{1e6 * one / len(blobs):>9.0f}"
            )
    codec = LMGC(level=1)
    tiny = codec.encode(data[:16])
    per_call = _best(lambda: [codec.decode(tiny) for _ in range(1000)], args.repeat) / 1000
    parse = _best(lambda: [container.read_header(tiny) for _ in range(1000)], args.repeat) / 1000
    print(
        f"lmgc fixed cost per chunk: a 16-value chunk decodes in {1e6 * per_call:.0f} us "
        f"through the numcodecs codec; verifying and parsing its {container.read_header(tiny)[1]}"
        f"-byte header alone takes {1e6 * parse:.0f} us"
    )


if __name__ == "__main__":
    main()
