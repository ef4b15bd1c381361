"""The ``float`` prior at level 2 (the adaptive context model, the numbers of docs/results.md;
``benchmarks/levels.py`` puts both levels side by side) against pcodec, byte-plane zstd, lzma and
zstd on the same bytes.

Every codec runs in this process on identical input, is decoded and compared bit for bit, and is
timed on one core (best of ``--repeat``) by the CPU time of the calling thread
(``time.thread_time``): every codec here runs single-threaded in that thread, and CPU time is not
inflated by other jobs on a shared machine the way wall time is. Prints Markdown tables (rate =
compressed / original, throughput = original MB per second) for: whole tensors, 8-bit quantized
gradients (the quantize stage's indices), and, with ``--scale``, 1-core vs 2-core speed (wall
time; a fresh process's first call, and the best of two more) and peak memory (after the first
call) on a ~100 MB input.

    python benchmarks/float_prior.py                   # every workload (see workloads.py)
    python benchmarks/float_prior.py mlp-digits vit    # some of them
    python benchmarks/float_prior.py --scale           # the speed/memory section only
"""

from __future__ import annotations

import argparse
import lzma
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from workloads import MLP_LAYOUT, SHARED_MLP, Workload, load, machine

from lmgc_core import Pipeline, decompress


def _best(fn: Callable[[], object], repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.thread_time()
        out = fn()
        best = min(best, time.thread_time() - t)
    return best, out


def _pcodec(arr: np.ndarray) -> tuple[Callable, Callable] | None:
    from pcodec import ChunkConfig, standalone

    flat = arr.reshape(-1)
    if flat.dtype.kind == "V" or flat.dtype.name == "bfloat16":
        flat = flat.view(np.uint16)  # pcodec has no bfloat16: code the bits as integers
    if flat.dtype not in (np.float32, np.float64, np.float16, np.uint16, np.uint32, np.uint8):
        return None
    if flat.dtype == np.uint8:
        flat = flat.astype(np.uint16)

    def enc():
        return bytes(standalone.simple_compress(np.ascontiguousarray(flat), ChunkConfig()))

    def dec(blob):
        back = standalone.simple_decompress(blob)
        return back.astype(arr.dtype) if arr.dtype == np.uint8 else back.view(arr.dtype)

    return enc, dec


def _byteplane_zstd(arr: np.ndarray) -> tuple[Callable, Callable]:
    import zstandard

    size = arr.dtype.itemsize
    raw = np.ascontiguousarray(arr).reshape(-1).view(np.uint8).reshape(-1, size)

    def enc():
        planes = [zstandard.compress(np.ascontiguousarray(raw[:, k]).tobytes(), 19)
                  for k in range(size)]  # fmt: skip
        head = np.array([len(p) for p in planes], dtype="<u4").tobytes()
        return head + b"".join(planes)

    def dec(blob):
        lens = np.frombuffer(blob[: 4 * size], dtype="<u4")
        out = np.empty_like(raw)
        pos = 4 * size
        for k, n in enumerate(lens):
            out[:, k] = np.frombuffer(zstandard.decompress(blob[pos : pos + n]), dtype=np.uint8)
            pos += int(n)
        return out.reshape(-1).view(arr.dtype)

    return enc, dec


def _generic(compress: Callable, decompress_: Callable, arr: np.ndarray):
    raw = np.ascontiguousarray(arr).tobytes()
    return (lambda: compress(raw)), (lambda blob: np.frombuffer(decompress_(blob), dtype=arr.dtype))


def _lmgc(config: dict, arr: np.ndarray, reference: np.ndarray | None = None):
    pipe = Pipeline.from_config(config)
    return (lambda: pipe.compress(arr, jobs=1)), (lambda blob: decompress(blob, jobs=1))


def codecs(w: Workload, adaptive: bool) -> dict[str, tuple[Callable, Callable]]:
    import zstandard

    arr = w.array
    out = {
        "lmgc float": _lmgc({"prior": {"name": "float", "layout": w.layout}, "level": 2}, arr),
        "lmgc float (no layout)": _lmgc({"prior": "float", "level": 2}, arr.reshape(-1)),
    }
    if adaptive:
        out["lmgc adaptive"] = _lmgc({"prior": "adaptive"}, arr.reshape(-1))
    pc = _pcodec(arr)
    if pc:
        out["pcodec"] = pc
    out["byte-plane zstd"] = _byteplane_zstd(arr)
    out["zstd -19"] = _generic(lambda b: zstandard.compress(b, 19), zstandard.decompress, arr)
    out["lzma -9e"] = _generic(
        lambda b: lzma.compress(b, preset=9 | lzma.PRESET_EXTREME), lzma.decompress, arr
    )
    return out


def measure(w: Workload, repeat: int, adaptive: bool) -> dict[str, tuple[float, float, float]]:
    """codec -> (rate %, compress MB/s, decompress MB/s), every result checked bit for bit."""
    results = {}
    want = np.ascontiguousarray(w.array).tobytes()
    for name, (enc, dec) in codecs(w, adaptive).items():
        reps = 1 if "adaptive" in name else repeat
        t_enc, blob = _best(enc, reps)
        t_dec, back = _best(lambda: dec(blob), reps)  # noqa: B023
        if np.ascontiguousarray(back).tobytes() != want:
            raise SystemExit(f"{w.name}: {name} did not round-trip bit for bit")
        mb = w.array.nbytes / 1e6
        results[name] = (100 * len(blob) / w.array.nbytes, mb / t_enc, mb / t_dec)
    return results


def quantized(w: Workload) -> dict[str, float]:
    """8-bit quantize stage output: lmgc float, lmgc adaptive and lzma on the same indices."""
    cfg = {"stages": [{"name": "quantize", "bits": 8}]}
    out = {}
    rows = w.array.reshape(len(w.array), -1) if w.array.ndim > 1 else w.array[None]
    sizes = {"lmgc float": 0, "lmgc adaptive": 0, "lzma -9e": 0}
    for row in rows:
        for name, prior in (("lmgc float", {"name": "float", "layout": w.layout, "level": 2}),
                            ("lmgc adaptive", {"name": "adaptive"})):  # fmt: skip
            pipe = Pipeline.from_config({**cfg, "prior": prior})
            blob = pipe.compress(row)
            assert decompress(blob).tobytes() == pipe.reconstruct(row).tobytes()
            sizes[name] += len(blob)
        parts, _ = Pipeline.from_config(cfg)._forward(row)
        raw = b"".join(np.ascontiguousarray(v).tobytes() for v in parts.values())
        sizes["lzma -9e"] += len(lzma.compress(raw, preset=9 | lzma.PRESET_EXTREME))
    for name, size in sizes.items():
        out[name] = 100 * size / w.array.nbytes
    return out


SCALE_SCRIPT = """
import resource, sys, time, numpy as np
from lmgc_core import Pipeline, decompress
arr = np.load(sys.argv[1], mmap_mode="r")
arr = np.ascontiguousarray(arr)
jobs = int(sys.argv[2])
pipe = Pipeline.from_config({"prior": {"name": "float", "layout": %r}, "level": 2})
decompress(pipe.compress(arr[:2], jobs=jobs))  # load the kernels once, outside the timing
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
times = []
for _ in range(3):  # the first call also pays the first touch of every buffer's pages
    t = time.perf_counter(); blob = pipe.compress(arr, jobs=jobs); te = time.perf_counter() - t
    t = time.perf_counter(); back = decompress(blob, jobs=jobs); td = time.perf_counter() - t
    times.append((te, td))
    if len(times) == 1:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
assert back.tobytes() == arr.tobytes()
te, td = times[0]
print(te, td, min(t[0] for t in times[1:]), min(t[1] for t in times[1:]), len(blob), arr.nbytes,
      base * 1024, peak * 1024)
"""


def scale(repeat: int) -> list[str]:
    """1 vs 2 cores on ~100 MB (the shared MLP gradients tiled), fresh processes, peak RSS."""
    src = np.load(SHARED_MLP)
    reps = -(-(100 << 20) // src.nbytes)
    big = np.tile(src, (reps, 1))
    path = Path("bench-out") / "scale_input.npy"
    path.parent.mkdir(exist_ok=True)
    np.save(path, big)
    rows = []
    for jobs in (1, 2):
        best = None
        for _ in range(repeat):
            run = subprocess.run(
                [sys.executable, "-c", SCALE_SCRIPT % (MLP_LAYOUT,), str(path), str(jobs)],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            te, td, we, wd, size, n, base, peak = (float(x) for x in run.stdout.split())
            if best is None or te + td < best[0] + best[1]:
                best = (te, td, we, wd, size, n, base, peak)
        te, td, we, wd, size, n, base, peak = best
        mb = n / 1e6
        rows.append(
            f"| {jobs} | {mb:.0f} MB | {100 * size / n:.2f} % | {mb / te:.1f} / {mb / we:.1f} | "
            f"{mb / td:.1f} / {mb / wd:.1f} | {(peak - base) / n:.2f}x "
            f"(+{peak / 1e6:.0f} MB RSS total) |"
        )
    return [
        "Speeds: the process's first call on the input / the best of two more calls.",
        "",
        "| jobs | input | rate | compress MB/s | decompress MB/s | peak memory over input |",
        "|---:|---:|---:|---:|---:|---|",
        *rows,
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workloads", nargs="*")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-adaptive", action="store_true", help="skip the (slow) adaptive prior")
    ap.add_argument("--scale", action="store_true", help="only the 1-vs-2-core / memory section")
    args = ap.parse_args()
    print(f"Machine: {machine()}; "
          f"load average before: {os.getloadavg()[0]:.2f}\n")  # fmt: skip
    if args.scale:
        print("\n".join(scale(args.repeat)))
        return
    loaded = load(args.workloads or None)
    tables: dict[str, dict] = {}
    for w in loaded:
        tables[w.name] = measure(w, args.repeat, not args.no_adaptive)
        print(f"measured {w.name}", file=sys.stderr)
    names = list(dict.fromkeys(n for t in tables.values() for n in t))
    print("Rate (compressed / original; lower is better):\n")
    print("| workload | dtype | MB | " + " | ".join(names) + " |")
    print("|---|---|---:|" + "---:|" * len(names))
    for w in loaded:
        t = tables[w.name]
        best = min(v[0] for k, v in t.items() if not k.startswith("lmgc"))
        cells = []
        for n in names:
            if n not in t:
                cells.append("n/a")
                continue
            mark = "**" if t[n][0] == min(v[0] for v in t.values()) else ""
            cells.append(f"{mark}{t[n][0]:.2f} %{mark}")
        gain = 100 * (1 - t["lmgc float"][0] / best)
        print(f"| {w.name} | {w.array.dtype} | {w.array.nbytes / 1e6:.1f} | " + " | ".join(cells)
              + f" |  <!-- float vs best classical: {gain:+.1f} % -->")  # fmt: skip
    print("\nThroughput on one core, compress / decompress (MB/s of original data):\n")
    print("| workload | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for w in loaded:
        t = tables[w.name]
        cells = [f"{t[n][1]:.1f} / {t[n][2]:.1f}" if n in t else "n/a" for n in names]
        print(f"| {w.name} | " + " | ".join(cells) + " |")
    print("\nfloat vs the best classical codec (pcodec, byte-plane zstd, zstd, lzma):\n")
    for w in loaded:
        t = tables[w.name]
        best_name = min((k for k in t if not k.startswith("lmgc")), key=lambda k: t[k][0])
        gain = 100 * (1 - t["lmgc float"][0] / t[best_name][0])
        print(f"- {w.name}: float {t['lmgc float'][0]:.2f} % vs {best_name} "
              f"{t[best_name][0]:.2f} %: {gain:+.1f} % smaller")  # fmt: skip
    print(
        "\n8-bit quantized (quantize stage, paper's linear formula), rate vs the float32 input:\n"
    )
    print("| workload | lmgc float | lmgc adaptive | lzma -9e |")
    print("|---|---:|---:|---:|")
    for w in loaded:
        if w.array.dtype != np.float32:
            continue
        q = quantized(w)
        print(f"| {w.name} | {q['lmgc float']:.2f} % | {q['lmgc adaptive']:.2f} % | "
              f"{q['lzma -9e']:.2f} % |")  # fmt: skip
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
