"""The delta kernel's level-1 decode with its AVX2 loops reading by scalar loads (``zen()``, the
default on AMD CPUs) and by gathers, in one process.

Why: AMD's gather instruction is slower than eight loads, Intel's is not; the two are compared
round after round (process CPU time, best of all runs) on the training run of
``delta_workloads.py`` (``bench-out/deltas``; run that script first): the last pair of each
group, every tensor against its base, each decode compared bit for bit.

    OMP_NUM_THREADS=1 python benchmarks/delta_paths.py weights-f32 weights-bf16
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import delta_workloads
import deltas
from delta_kernel import GROUPS
from workloads import machine


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("groups", nargs="*", default=GROUPS, help="groups (default: all)")
    ap.add_argument("--repeat", type=int, default=5, help="runs per path and round")
    ap.add_argument("--rounds", type=int, default=6, help="rounds over the paths")
    args = ap.parse_args(argv)
    from lmgc_float import delta

    k = delta.kernel()
    if not k.simd():
        raise SystemExit("no AVX2 here: the delta kernel has only its scalar loops")
    was = k.zen()
    manifest = delta_workloads.load()
    print(f"Machine: {machine()}")
    print(f"one thread, best of {args.repeat} x {args.rounds} rounds, process CPU time\n")
    print("| group | loads MB/s | gathers MB/s | loads / gathers |")
    print("|---|---:|---:|---:|")
    try:
        for group in args.groups:
            series, kind, _ = deltas.GROUPS[group]
            _, new_t, old_t = deltas.pairs(manifest, series, kind)[-1]
            coded = [(delta.encode(new_t[t], old_t[t], new_t[t].shape, 1, 1), new_t[t], old_t[t])
                     for t in new_t]  # fmt: skip
            nbytes = sum(new.nbytes for _, new, _ in coded)
            best = {True: float("inf"), False: float("inf")}
            for _ in range(args.rounds):
                for zen in (True, False):
                    k.zen(zen)
                    for _ in range(args.repeat):
                        t = time.process_time()
                        outs = [delta.decode(meta, blocks, old, new.dtype, new.shape, 1)
                                for (meta, blocks), new, old in coded]  # fmt: skip
                        best[zen] = min(best[zen], time.process_time() - t)
                    for out, (_, new, _) in zip(outs, coded, strict=True):
                        if out.tobytes() != new.tobytes():
                            raise SystemExit(f"{group}: the decode differs")
            loads, gathers = (nbytes / best[z] / 1e6 for z in (True, False))
            ratio = loads / gathers
            print(f"| {group} | {loads:,.0f} | {gathers:,.0f} | {ratio:.2f}x |", flush=True)
    finally:
        k.zen(was)


if __name__ == "__main__":
    main()
