"""The fast level's decoding cost per row: the same values cut into rows of different lengths.

Why: the kernel rebuilds values row by row (predictions from the row's and the columns' side
information, a 512- or 256-bit loop with a scalar remainder, the checksum fed per row), so a
tensor of short rows decodes slower than one of long rows. This measures how much, on the first
2^21 values of the bf16 GPT weights (``levels.py``'s ``gpt-bf16``), laid out as (2^21 / cols,
cols) for each ``cols``: the kernel alone, one thread, every decoding path the CPU has, best of
``--repeat`` by process CPU time, each decode compared bit for bit.

    OMP_NUM_THREADS=1 python benchmarks/row_length.py
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

COLS = [16, 32, 64, 128, 256, 1024, 4096]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=30)
    args = ap.parse_args()
    from lmgc_float import fast
    from lmgc_float.formats import as_uint, check_layout, float_format, segments
    from lmgc_float.prior import FAST_BLOCK_VALUES

    here = machine()
    paths = [p for p in fast.DECODING_PATHS if p != "scalar" and _runs(p)]
    values = load(["gpt-bf16"])[0].array[: 1 << 21]
    fmt, bits = float_format(values.dtype), as_uint(values)
    print(f"Machine: {here}")
    print(f"one thread, best of {args.repeat}, process CPU time; {values.nbytes:,} bytes\n")
    print("| columns | size % | " + " | ".join(f"{p} MB/s | {p} ns/row" for p in paths) + " |")
    print("|---:|---:|" + "---:|---:|" * len(paths))
    for cols in COLS:
        layout = check_layout([[values.size // cols, cols]])
        cuts, _ = segments(values.shape, layout, FAST_BLOCK_VALUES)
        blocks, splits = fast.encode_split_blocks(bits, cuts, fmt, 1)
        groups = [fast.seg_array(g) for g in (fast.regroup(cuts, splits) if splits else cuts)]
        out = np.empty_like(bits)
        cells = []
        for p in paths:
            best = float("inf")
            with fast.decoding_path(p):
                for _ in range(args.repeat):
                    t = time.process_time()
                    fast.decode_blocks(blocks, out, groups, fmt, 1, canonical=False)
                    best = min(best, time.process_time() - t)
            if out.tobytes() != bits.tobytes():
                raise SystemExit(f"{cols} columns, {p}: the decode differs")
            per_row = 1e9 * best * cols / values.size
            cells.append(f"{values.nbytes / best / 1e6:,.0f} | {per_row:.0f}")
        size = 100 * sum(map(len, blocks)) / values.nbytes
        print(f"| {cols} | {size:.2f} | " + " | ".join(cells) + " |", flush=True)


def _runs(path: str) -> bool:
    from lmgc_float import fast

    with fast.decoding_path(path) as here:
        return here


if __name__ == "__main__":
    main()
