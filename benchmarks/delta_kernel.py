"""The float prior's delta model (``lmgc_float.delta``) next to the delta peers, one thread.

Why: issue 21's target is lmgc ``--base`` at <= 0.90x the best XOR-or-subtract delta peer on
the same tensors, and the fast level's delta coding at >= 0.5x the speed of its standalone
coding. This measures the model itself (no container), on the training run of
``delta_workloads.py`` (``bench-out/deltas``; run that script first), each tensor coded on its
own by its shape, every round trip checked bit for bit:

* lmgc delta, level 1 (fast) and level 2 (highest): ``delta.encode`` / ``delta.decode``;
* lmgc alone, level 1: the fast level's blocks of the new checkpoint (its kernel, no container),
  the speed reference;
* peers: XOR then pcodec, XOR then byte-plane zstd -19, ZipNN's delta (XOR of the byte streams).

Speed is the original bytes over the summed process CPU time (best of ``--repeat``).

    python benchmarks/delta_kernel.py                       # every group, the last 2 pairs each
    python benchmarks/delta_kernel.py --groups weights-f32 --pairs 1 --repeat 3
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import delta_workloads  # noqa: E402
import deltas  # noqa: E402

GROUPS = ["weights-f32", "weights-bf16", "exp_avg", "exp_avg_sq", "ft-series-f32",
          "ft-weights-f32", "ft-weights-bf16"]  # fmt: skip


def lmgc_delta(level: int) -> deltas.Codec:
    from lmgc_float import delta

    def codec(new: np.ndarray, old: np.ndarray | None):
        shape = tuple(new.shape)

        def enc():
            return delta.encode(new, old, shape, level, 1)

        def dec(coded):
            meta, blocks = coded
            return delta.decode(meta, blocks, old, new.dtype, shape, 1).reshape(shape)

        return enc, dec

    return codec


def lmgc_fast_alone(new: np.ndarray, old: np.ndarray | None = None):
    """The fast level's blocks of ``new`` alone (as benchmarks/levels.py's kernel row)."""
    from lmgc_float import fast
    from lmgc_float.formats import as_uint, float_format, from_uint, segments
    from lmgc_float.prior import FAST_BLOCK_VALUES

    fmt = float_format(new.dtype)
    bits = as_uint(new.reshape(-1))
    cuts, _ = segments(new.shape, None, FAST_BLOCK_VALUES)

    def dec(blocks):
        out = np.empty_like(bits)
        fast.decode_blocks(blocks, out, cuts, fmt, 1)
        return from_uint(out, new.dtype).reshape(new.shape)

    return (lambda: fast.encode_blocks(bits, cuts, fmt, 1)), dec


def xor_byteplane_zstd19(new: np.ndarray, old: np.ndarray):
    import zstandard

    size = new.itemsize
    base = deltas._uint(old)
    cctx, dctx = zstandard.ZstdCompressor(level=19), zstandard.ZstdDecompressor()

    def enc() -> bytes:
        x = (deltas._uint(new) ^ base).view(np.uint8).reshape(-1, size)
        planes = [cctx.compress(np.ascontiguousarray(x[:, k]).tobytes()) for k in range(size)]
        return np.array([len(p) for p in planes], dtype="<u4").tobytes() + b"".join(planes)

    def dec(blob: bytes) -> np.ndarray:
        lens = np.frombuffer(blob[: 4 * size], dtype="<u4")
        out = np.empty((base.size, size), np.uint8)
        pos = 4 * size
        for k, n in enumerate(lens):
            out[:, k] = np.frombuffer(dctx.decompress(blob[pos : pos + int(n)]), dtype=np.uint8)
            pos += int(n)
        return (out.reshape(-1).view(base.dtype) ^ base).view(new.dtype).reshape(new.shape)

    return enc, dec


CODECS: dict[str, tuple[deltas.Codec, bool]] = {
    "lmgc delta L1": (lmgc_delta(1), True),
    "lmgc delta L2": (lmgc_delta(2), True),
    "lmgc alone L1 (fast kernel)": (lmgc_fast_alone, False),
    "XOR + pcodec": (deltas.xor_pcodec, True),
    "XOR + byte-plane zstd -19": (xor_byteplane_zstd19, True),
    "ZipNN delta (XOR)": (deltas.zipnn_delta, True),
}
PEERS = ("XOR + pcodec", "XOR + byte-plane zstd -19", "ZipNN delta (XOR)")


def _size(coded) -> int:
    if isinstance(coded, tuple):  # (meta, blocks)
        return sum(len(b) for b in coded[1])
    if isinstance(coded, list):
        return sum(len(b) for b in coded)
    return len(coded)


def measure(codec, group_pairs, repeat: int, delta: bool) -> tuple[int, int, float, float]:
    size = orig = 0
    t_enc = t_dec = 0.0
    for label, new, old in group_pairs:
        for name, a in new.items():
            enc, dec = codec(a, old[name] if delta else None)
            te, coded = deltas._best(enc, repeat)
            td, back = deltas._best(lambda: dec(coded), repeat)  # noqa: B023
            if np.asarray(back).tobytes() != np.ascontiguousarray(a).tobytes():
                raise SystemExit(f"{label} {name}: round trip not bit-exact")
            size, orig = size + _size(coded), orig + a.nbytes
            t_enc, t_dec = t_enc + te, t_dec + td
    return size, orig, t_enc, t_dec


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--groups", nargs="+", default=GROUPS, choices=GROUPS)
    ap.add_argument("--pairs", type=int, default=2, help="the last N pairs of each series")
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args(argv)
    manifest = delta_workloads.load()
    for group in args.groups:
        series, kind, what = deltas.GROUPS[group]
        gp = deltas.pairs(manifest, series, kind)[-args.pairs :]
        print(f"\n## {group}: {what} ({len(gp)} pairs: {', '.join(p[0] for p in gp)})")
        print(f"{'codec':30s} {'size':>8s} {'enc MB/s':>9s} {'dec MB/s':>9s}")
        rows = {}
        for name, (codec, is_delta) in CODECS.items():
            size, orig, te, td = measure(codec, gp, args.repeat, is_delta)
            rows[name] = (size / orig, orig / te / 1e6, orig / td / 1e6)
            print(f"{name:30s} {100 * size / orig:7.2f}% {rows[name][1]:9.1f} {rows[name][2]:9.1f}")
        best = min(PEERS, key=lambda p: rows[p][0])
        fast = rows["lmgc alone L1 (fast kernel)"]
        for lv in ("lmgc delta L1", "lmgc delta L2"):
            print(f"{lv} / best peer ({best}): {rows[lv][0] / rows[best][0]:.3f}x")
        print(
            f"lmgc delta L1 speed / fast alone: encode {rows['lmgc delta L1'][1] / fast[1]:.2f}x,"
            f" decode {rows['lmgc delta L1'][2] / fast[2]:.2f}x"
        )


if __name__ == "__main__":
    main()
