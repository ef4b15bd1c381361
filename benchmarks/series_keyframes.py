"""``lmgc compress --series --keyframe K`` on a real training run (issue 21): how the size of a
checkpoint series and the cost of reading one checkpoint back depend on K.

Data: the checkpoints of ``benchmarks/delta_workloads.py`` (``bench-out/deltas``, a byte GPT
trained with AdamW): ``--run pre``, the 8 pretraining checkpoints, one every 50 steps at lr 1e-3;
``--run ft``, the last of them followed by the 4 checkpoints of its fine-tune (lr 5e-5, 25 steps
apart); as safetensors: ``all`` (weights and both AdamW moments, 39.9 MB each) or ``weights``
(13.3 MB each). For each K the command compresses
the whole series (K = 1: every file alone); then the last checkpoint is read back the only way
it can be, by decompressing its chain from the keyframe before it (``lmgc decompress F_k.lmgc
... F_8.lmgc``), and compared byte for byte. Times are wall-clock seconds of the commands (the
VM is shared: compare within a run).

    python benchmarks/series_keyframes.py                       # all, K = 1 2 4 8
    python benchmarks/series_keyframes.py --files weights --keyframes 1 8
    python benchmarks/series_keyframes.py --run ft --keyframes 1 5
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DELTAS = ROOT / "bench-out" / "deltas"


def lmgc(*args: str) -> float:
    """Run ``lmgc ARGS`` (quiet); its wall-clock seconds."""
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "lmgc_core", *args, "-q"], check=True)
    return time.perf_counter() - t


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", choices=["pre", "ft"], default="pre")
    ap.add_argument("--files", choices=["all", "weights"], default="all")
    ap.add_argument("--keyframes", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--level", default="1")
    args = ap.parse_args()
    suffix = ".safetensors" if args.files == "all" else ".weights.safetensors"
    sources = sorted(p for p in DELTAS.glob(f"{args.run}-*{suffix}")
                     if args.files == "weights" or p.name.count(".") == 1)  # fmt: skip
    if args.run == "ft":  # the fine-tune starts from the last pretraining checkpoint
        sources.insert(0, DELTAS / f"pre-000400{suffix}")
    if not sources:
        raise SystemExit(f"no checkpoints in {DELTAS}: run benchmarks/delta_workloads.py")
    raw = sum(p.stat().st_size for p in sources)
    print(f"{len(sources)} checkpoints ({args.run}, {args.files}, {raw / 1e6:.1f} MB), "
          f"level {args.level}, load average {os.getloadavg()[0]:.2f}\n")  # fmt: skip
    print(
        "| K | series size | % of raw | largest file % | smallest % | compress s "
        "| files to read the last one | read the last one s |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for k in args.keyframes:
            run = Path(tmp) / f"k{k}"
            run.mkdir()
            files = []
            for p in sources:
                (run / p.name).symlink_to(p)
                files.append(run / p.name)
            seconds = lmgc("compress", "-l", args.level, "--series", "--keyframe", str(k),
                           *map(str, files))  # fmt: skip
            sizes = [Path(f"{f}.lmgc").stat().st_size for f in files]
            rates = [100 * s / p.stat().st_size for s, p in zip(sizes, sources, strict=True)]
            first = (len(files) - 1) // k * k  # the keyframe of the last file
            chain = files[first:]
            for f in chain:
                f.unlink()  # the symlinks go; decompression writes the files back
            read = lmgc("decompress", *(f"{f}.lmgc" for f in chain))
            if sha(chain[-1]) != sha(sources[-1]):
                raise SystemExit(f"K={k}: the last checkpoint does not come back byte for byte")
            print(f"| {k} | {sum(sizes) / 1e6:.2f} MB | {100 * sum(sizes) / raw:.2f} | "
                  f"{max(rates):.2f} | {min(rates):.2f} | {seconds:.1f} | {len(chain)} | "
                  f"{read:.1f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
