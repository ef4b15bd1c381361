"""The fast level's block kernel on each decoding path the CPU has, in one process.

Why: the kernel picks its path at import (``lmgc_float.fast.DECODING_PATHS``: AMD's table
entries by scalar loads, with or without AVX-512, AVX-512VL's renormalisation, plain AVX2), and
which is fastest depends on the CPU; paths compared round after round in one process show
differences of a few percent that separate runs would hide. The blocks are those the prior
codes (its cut and splits); each path decodes them bit for bit as the pipeline does (no
canonical checks), timed by the process's CPU time, best of all its runs.

    OMP_NUM_THREADS=1 python benchmarks/kernel_paths.py ocr-det gpt-bf16
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from levels import load
from workloads import machine

NAMES = ["ocr-det", "ocr-det-bf16", "ocr-rec", "ocr-rec-bf16", "gpt", "gpt-bf16", "gpt-adam-m",
         "smollm2-grads", "mlp-digits", "convnet"]  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help=f"workloads (default: {' '.join(NAMES)})")
    ap.add_argument("--repeat", type=int, default=15, help="runs per path and round")
    ap.add_argument("--rounds", type=int, default=4, help="rounds over the paths")
    ap.add_argument("--scalar", action="store_true", help="the scalar path too")
    args = ap.parse_args(argv)
    from lmgc_float import fast
    from lmgc_float.formats import as_uint, check_layout, float_format, segments
    from lmgc_float.prior import FAST_BLOCK_VALUES

    paths = []
    for p in fast.DECODING_PATHS:
        with fast.decoding_path(p) as here:
            if here and (args.scalar or p != "scalar"):
                paths.append(p)
    print(f"Machine: {machine()}")
    print(f"one thread, best of {args.repeat} x {args.rounds} rounds, process CPU time; MB/s\n")
    print("| workload | " + " | ".join(paths) + " |")
    print("|---|" + "---:|" * len(paths))
    for w in load(args.names or NAMES):
        fmt, bits = float_format(w.array.dtype), as_uint(w.array.reshape(-1))
        cuts, _ = segments(w.array.shape, check_layout(w.layout), FAST_BLOCK_VALUES)
        blocks, splits = fast.encode_split_blocks(bits, cuts, fmt, 1)
        groups = [fast.seg_array(g) for g in (fast.regroup(cuts, splits) if splits else cuts)]
        out = np.empty_like(bits)
        best = dict.fromkeys(paths, float("inf"))
        for _ in range(args.rounds):
            for p in paths:
                with fast.decoding_path(p):
                    for _ in range(args.repeat):
                        t = time.process_time()
                        fast.decode_blocks(blocks, out, groups, fmt, 1, canonical=False)
                        best[p] = min(best[p], time.process_time() - t)
                if out.tobytes() != bits.tobytes():
                    raise SystemExit(f"{w.name}, {p}: the decode differs")
        cells = [f"{bits.nbytes / max(best[p], 1e-9) / 1e6:,.0f}" for p in paths]
        print(f"| {w.name} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
