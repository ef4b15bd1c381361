"""The fast level's block kernel alone, back to back: the installed build and other builds of it.

Why: on a shared machine a single timing of the kernel moves by 10-20 % from run to run; builds
compared in one process, round after round (each timed by the process's CPU time, best of all
its runs), show differences of a few percent. Each build encodes the workload itself (so a build
that changes the bytes shows its own size) and must decode it bit for bit. The blocks are those
the prior codes: its cut, split where the installed build's ``encode_split`` splits it.

Build another copy of ``plugins/lmgc_float/_fast_kernels.c`` (edited, or from another commit)
with the flags Python builds extensions with, under any file name::

    gcc -O3 -fwrapv -DNDEBUG -fPIC -shared -I plugins/lmgc_float \\
        -I "$(python -c 'import sysconfig; print(sysconfig.get_paths()["include"])')" \\
        /tmp/k/_fast_kernels.c -o /tmp/k/old.so
    OMP_NUM_THREADS=1 python benchmarks/fast_kernel.py --build /tmp/k/old.so ocr-rec adam-m

Under ``perf record`` the builds show as separate objects (give them different file names).

A build that takes ``decode(..., canonical=)`` decodes as the pipeline does, without the canonical
checks (the container checked the block's CRC32); ``--canonical`` adds a row with them (a block
whose CRC32 went unchecked). Builds from before the flag always run them.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import sys
import time
from pathlib import Path
from types import ModuleType

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from levels import load
from workloads import machine

NAMES = ["ocr-rec", "ocr-rec-bf16", "adam-m", "mlp-digits"]


def _build(path: str) -> ModuleType:
    """A copy of the kernel from its shared object (its own module object and static state)."""
    name = "lmgc_float._fast_kernels"
    loader = importlib.machinery.ExtensionFileLoader(name, path)
    spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def _timer(fn, times: list[float]) -> None:
    t = time.process_time()
    fn()
    times.append(time.process_time() - t)


def _has_flag(k: ModuleType) -> bool:
    """Whether this build's decode takes ``canonical=`` (builds from before it always check)."""
    return "canonical=" in (k.decode.__doc__ or "")


def _codec(k: ModuleType, bits: np.ndarray, segs: list, layout: tuple, flag: dict):
    """(encode, decode, output array, coded size) of one build on one workload; ``flag``: the
    decode's ``canonical=`` keyword (empty for a build without it)."""
    blocks = [k.encode(bits, s, *layout) for s in segs]
    out = np.empty_like(bits)

    def enc():
        return [k.encode(bits, s, *layout) for s in segs]

    def dec():
        for b, s in zip(blocks, segs, strict=True):
            k.decode(b, out, s, *layout, **flag)

    return enc, dec, out, sum(map(len, blocks))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help=f"workloads (default: {' '.join(NAMES)})")
    ap.add_argument("--build", action="append", default=[], help="another build (.so) to time")
    ap.add_argument("--repeat", type=int, default=5, help="runs per build and round")
    ap.add_argument("--rounds", type=int, default=3, help="rounds over the builds")
    ap.add_argument("--no-encode", action="store_true", help="time decoding only")
    ap.add_argument(
        "--canonical",
        action="store_true",
        help="also time each build that has the flag with the canonical checks on",
    )
    args = ap.parse_args(argv)

    from lmgc_float import fast
    from lmgc_float.codec import seg_array
    from lmgc_float.formats import as_uint, check_layout, float_format, segments
    from lmgc_float.prior import FAST_BLOCK_VALUES

    builds = {"installed": fast.kernel()} | {p: _build(p) for p in args.build}
    kernels = {}  # label -> (build, decode keywords)
    for label, k in builds.items():
        kernels[label] = (k, {"canonical": False} if _has_flag(k) else {})
        if args.canonical and _has_flag(k):
            kernels[f"{label} +canonical"] = (k, {"canonical": True})
    print(f"Machine: {machine()}")
    print(f"one thread, best of {args.repeat * args.rounds}, process CPU time; MB = 10^6 bytes\n")
    print("| workload | build | size % | encode MB/s | decode MB/s |")
    print("|---|---|---:|---:|---:|")
    for w in load(args.names or NAMES):
        fmt = float_format(w.array.dtype)
        bits = np.ascontiguousarray(as_uint(w.array.reshape(-1)))
        cuts, _ = segments(w.array.shape, check_layout(w.layout), FAST_BLOCK_VALUES)
        _, splits = fast.encode_split_blocks(bits, cuts, fmt, 1)
        segs = [seg_array(c) for c in (fast.regroup(cuts, splits) if splits else cuts)]
        layout = (8 * bits.dtype.itemsize, fmt.exponent_bits, fmt.mantissa_bits)
        runs = {}
        for label, (k, flag) in kernels.items():
            enc, dec, out, size = _codec(k, bits, segs, layout, flag)
            dec()
            if out.tobytes() != bits.tobytes():
                raise SystemExit(f"{w.name}: {label} did not round-trip bit for bit")
            runs[label] = (enc, dec, size, [], [])
        for _ in range(args.rounds):  # builds in turn, so a busy spell hits them alike
            for enc, dec, _size, t_enc, t_dec in runs.values():
                for _ in range(args.repeat):
                    _timer(dec, t_dec)
                    if not args.no_encode:
                        _timer(enc, t_enc)
        mb = w.array.nbytes / 1e6
        for label, (_enc, _dec, size, t_enc, t_dec) in runs.items():
            e = f"{mb / min(t_enc):,.0f}" if t_enc else "-"
            print(
                f"| {w.name} | {label} | {100 * size / w.array.nbytes:.3f} | {e} | "
                f"{mb / min(t_dec):,.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
