"""Peak memory of ``lmgc compress`` / ``lmgc decompress`` on a large bfloat16 ``.safetensors``.

Builds a checkpoint-shaped file on the fly (an embedding, then transformer layers; bfloat16
weights drawn from N(0, 0.02) with a fixed seed, written slice by slice so this script stays
small too), runs the real ``lmgc`` command on it in a child process, and reports each child's
peak resident memory (``wait4`` rusage) against the largest tensor, the target being at most 3x.
The file must come back byte for byte (SHA-256 compared).

    python benchmarks/memory_safetensors.py                 # ~1 GiB in /tmp, default prior
    python benchmarks/memory_safetensors.py --gib 0.25 --prior adaptive --chunk-size 8388608
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ml_dtypes
import numpy as np

MIB = 1 << 20


def layout(gib: float, vocab: int) -> list[tuple[str, tuple[int, ...]]]:
    """Tensor names and shapes of a bf16 checkpoint of at least ``gib`` GiB (hidden 2048, MLP
    5632, an embedding of ``vocab`` rows: 65,536 rows = 256 MiB, the largest tensor)."""
    hidden, mlp = 2048, 5632
    tensors = [("model.embed_tokens.weight", (vocab, hidden))]
    total = vocab * hidden * 2
    layer = 0
    while total < gib * (1 << 30):
        p = f"model.layers.{layer}."
        for name, shape in (
            ("self_attn.q_proj.weight", (hidden, hidden)),
            ("self_attn.k_proj.weight", (hidden, hidden)),
            ("self_attn.v_proj.weight", (hidden, hidden)),
            ("self_attn.o_proj.weight", (hidden, hidden)),
            ("mlp.gate_proj.weight", (mlp, hidden)),
            ("mlp.up_proj.weight", (mlp, hidden)),
            ("mlp.down_proj.weight", (hidden, mlp)),
            ("input_layernorm.weight", (hidden,)),
        ):
            tensors.append((p + name, shape))
            total += int(np.prod(shape)) * 2
        layer += 1
    tensors.append(("model.norm.weight", (hidden,)))
    return tensors


def write_checkpoint(path: Path, tensors: list[tuple[str, tuple[int, ...]]]) -> int:
    header, pos = {"__metadata__": {"format": "pt"}}, 0
    for name, shape in tensors:
        n = int(np.prod(shape)) * 2
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [pos, pos + n]}
        pos += n
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    rng = np.random.default_rng(0)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for _, shape in tensors:
            left = int(np.prod(shape))
            while left:
                k = min(left, 8 * MIB)
                f.write((rng.standard_normal(k, np.float32) * 0.02).astype(ml_dtypes.bfloat16))
                left -= k
    return path.stat().st_size


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(8 * MIB):
            h.update(block)
    return h.hexdigest()


def run(args: list[str]) -> tuple[float, float]:
    """(seconds, peak RSS in MiB) of one ``lmgc`` child process."""
    exe = shutil.which("lmgc") or str(Path(sys.executable).parent / "lmgc")
    start = time.perf_counter()
    proc = subprocess.Popen([exe, *args])
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"lmgc {' '.join(args)} failed")
    return seconds, usage.ru_maxrss / 1024  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=1.0, help="checkpoint size (GiB)")
    parser.add_argument("--vocab", type=int, default=65536, help="embedding rows (x 4 KiB)")
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="where to build it")
    parser.add_argument("--prior", help="prior plugin (default: lmgc's default)")
    parser.add_argument("--chunk-size", type=int, help="passed to lmgc compress")
    parser.add_argument("--keep", action="store_true", help="keep the files")
    opts = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="lmgc-mem-", dir=opts.dir))
    src = work / "model.safetensors"
    try:
        tensors = layout(opts.gib, opts.vocab)
        size = write_checkpoint(src, tensors)
        largest = max(int(np.prod(s)) * 2 for _, s in tensors)
        digest = sha256(src)
        extra = (["--prior", opts.prior] if opts.prior else []) + (
            ["--chunk-size", str(opts.chunk_size)] if opts.chunk_size else []
        )
        t_c, rss_c = run(["compress", str(src), "-q", *extra])
        packed = Path(f"{src}.lmgc").stat().st_size
        src.unlink()
        t_d, rss_d = run(["decompress", f"{src}.lmgc", "-q"])
        same = sha256(src) == digest
        print(f"file        {size / MIB:.1f} MiB bf16 safetensors, {len(tensors)} tensors, "
              f"largest {largest / MIB:.1f} MiB")  # fmt: skip
        print(f"archive     {packed / MIB:.1f} MiB ({100 * packed / size:.2f}%)")
        for what, t, rss in (("compress", t_c, rss_c), ("decompress", t_d, rss_d)):
            print(f"{what:<11} {t:7.1f} s  {size / MIB / t:6.2f} MiB/s  peak RSS {rss:7.1f} MiB "
                  f"= {rss * MIB / largest:.2f} x largest tensor")  # fmt: skip
        print(f"round trip  {'byte-identical' if same else 'DIFFERENT'}")
        if not same:
            raise SystemExit(1)
    finally:
        if not opts.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
