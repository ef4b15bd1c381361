"""Where a level-1 decode's time goes: the kernel's calls, the header, and the Python around them.

Why: issue 20's decode target (at most ZipNN's time) misses on small inputs and on bfloat16
weights, and the question is which part to make faster. For each workload this decodes one
level-1 stream through ``lmgc_core.decompress`` and through the bare kernel calls on the same
blocks, in turns, and prints the best wall time of each (this VM's speed drifts: see
``levels.py``), the time the full decode spent inside the kernel's calls (timed around each
call), and :func:`~lmgc_core.coding.pipeline.read_keyed_header` alone (verify, inflate and
parse the JSON header). ZipNN's time is ``levels.py``'s: a small decode's best depends on what
ran before it (ZipNN's of the ConvNet: 87 us after its own encode, 101 after its decode, 105
after lmgc's), and there each codec decodes after its own encodes.

    OMP_NUM_THREADS=1 python benchmarks/decode_overhead.py convnet ocr-det-bf16
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from levels import _lmgc, load  # noqa: E402
from workloads import machine  # noqa: E402

from lmgc_core import Pipeline, decompress  # noqa: E402
from lmgc_core.coding.pipeline import read_keyed_header  # noqa: E402


class _TimedKernel:
    """The fast kernel with its ``decode`` calls timed (the rest passed through)."""

    def __init__(self, kernel: object) -> None:
        self._kernel, self.spent = kernel, 0

    def __getattr__(self, name: str) -> object:
        return getattr(self._kernel, name)

    def decode(self, *args: object, **kwargs: object) -> object:
        start = time.perf_counter_ns()
        try:
            return self._kernel.decode(*args, **kwargs)
        finally:
            self.spent += time.perf_counter_ns() - start


def measure(name: str, rounds: int, seconds: float) -> dict[str, float]:
    """Best wall times in microseconds over ``rounds`` rounds of turns of ``seconds`` each."""
    from lmgc_float import fast
    from lmgc_float.formats import float_format

    (w,) = load([name])
    blob = _lmgc(w, 1)[0]()
    (header, offset), _ = read_keyed_header(blob)
    (part,) = header["parts"]
    meta = part["array"]
    if meta.get("level", 1) != 1:
        raise SystemExit(f"{name}: its stream is not coded at level 1")
    prior = Pipeline.from_config({"prior": {"name": "float", "layout": w.layout}}).prior
    shape = tuple(meta["shape"])
    cuts = fast.block_arrays(
        shape, prior.layout, prior.block_values, meta.get("splits", fast.NO_SPLITS)
    )
    kernel = fast.kernel()
    bits = np.dtype(f"u{w.array.itemsize}")
    width, ebits, mbits = fast._layout(np.empty(0, bits), float_format(w.array.dtype))
    sizes = [size for size, _ in part["blocks"]]

    def bare() -> np.ndarray:
        out, view, at = np.empty(w.array.size, bits), memoryview(blob), offset
        for size, cut in zip(sizes, cuts, strict=True):
            kernel.decode(view[at : at + size], out, cut, width, ebits, mbits, canonical=False)
            at += size
        return out

    timed = _TimedKernel(kernel)
    original = fast.kernel
    want = np.ascontiguousarray(w.array).tobytes()
    assert decompress(blob, jobs=1).tobytes() == want and bare().tobytes() == want
    best = dict.fromkeys(("full", "inside kernel", "bare kernel", "header"), float("inf"))

    def turn(key: str, fn: object) -> None:  # runs for `seconds`: the caches warm, as in use
        end = time.perf_counter() + seconds
        while True:
            timed.spent = 0
            start = time.perf_counter_ns()
            fn()  # type: ignore[operator]
            best[key] = min(best[key], time.perf_counter_ns() - start)
            if key == "full":
                best["inside kernel"] = min(best["inside kernel"], timed.spent)
            if time.perf_counter() > end:
                return

    try:
        fast.kernel = lambda: timed  # type: ignore[assignment]
        for _ in range(rounds):
            turn("full", lambda: decompress(blob, jobs=1))
            turn("bare kernel", bare)
            turn("header", lambda: read_keyed_header(blob))
    finally:
        fast.kernel = original  # type: ignore[assignment]
    return {key: ns / 1e3 for key, ns in best.items()}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", default=["convnet", "ocr-det-bf16", "ocr-rec-bf16"])
    ap.add_argument("--rounds", type=int, default=20, help="rounds of turns (default 20)")
    ap.add_argument("--turn", type=float, default=0.02, help="seconds a turn (default 0.02)")
    args = ap.parse_args(argv)
    print(f"Machine: {machine()}")
    print(
        f"best wall time in microseconds, one thread, the decodes taking {args.rounds} turns "
        f"of {args.turn} s each\n"
    )
    print(
        "| workload | lmgc_core.decompress | in its kernel calls | outside them "
        "| of which header | bare kernel calls |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for name in args.names:
        b = measure(name, args.rounds, args.turn)
        outside = b["full"] - b["inside kernel"]
        print(
            f"| {name} | {b['full']:,.1f} | {b['inside kernel']:,.1f} | {outside:,.1f} | "
            f"{b['header']:,.1f} | {b['bare kernel']:,.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
