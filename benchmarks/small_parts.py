"""How much level 2 saves on real tensors of a few thousand to 2^16 values: where the fast
level's ``small_parts="smaller"`` rule (code a small part at both levels, keep level 2 where it
saves at least 1/SMALL_GAIN) still pays for its second encode.

Why: the rule doubles and more a small part's encode time (level 2 codes at ~90 MB/s), so
``SMALL_VALUES`` should stop where level 2 stops being clearly smaller. Each tensor of the
``levels.py`` workloads (a model's layout cuts its vector into tensors) with 2^12 < n <= 2^16
values is coded alone by a level-1 prior with ``small_parts="level"`` and by a level-2 prior;
per size class, the median and largest saving of level 2 and how many tensors it is clearly
smaller on (the bytes the rule would keep there).

    python benchmarks/small_parts.py                 # every workload
    python benchmarks/small_parts.py ocr-rec gpt     # some
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from levels import BASE, load
from lmgc_float.prior import SMALL_GAIN

from lmgc_core import Pipeline

CLASSES = [(12, 13), (13, 14), (14, 15), (15, 16)]
"""Size classes (2^lo, 2^hi] of values."""


def sizes(tensor: np.ndarray) -> tuple[int, int]:
    """Coded bytes of ``tensor`` at level 1 (every part at level 1) and at level 2."""
    out = []
    for config in ({"level": 1, "small_parts": "level"}, {"level": 2}):
        prior = Pipeline.from_config({"prior": {"name": "float", **config}}).prior
        _, coded = prior.encode_array(tensor.reshape(-1), tensor.shape, 1)
        out.append(sum(map(len, coded)))
    return out[0], out[1]


def main(argv: list[str]) -> None:
    names = argv or [*BASE, "smollm2-grads", "convnet"]
    rows = []
    for w in load(names):
        flat, at = w.array.reshape(-1), 0
        for shape in w.layout or [list(w.array.shape)]:
            n = math.prod(shape)
            tensor, at = flat[at : at + n].reshape(shape), at + n
            if (1 << 12) < n <= (1 << 16):
                rows.append((n, *sizes(tensor)))
    print(f"workloads: {', '.join(names)}; clearly smaller: saves >= 1/{SMALL_GAIN}\n")
    print("| values | tensors | L2 saves, median | largest | clearly smaller | bytes it saves |")
    print("|---|---:|---:|---:|---:|---:|")
    for lo, hi in CLASSES:
        sel = [r for r in rows if (1 << lo) < r[0] <= (1 << hi)]
        if not sel:
            continue
        gains = [1 - l2 / l1 for _, l1, l2 in sel]
        clear = [(l1, l2) for (_, l1, l2), g in zip(sel, gains, strict=True) if g * SMALL_GAIN > 1]
        saved = sum(l1 - l2 for l1, l2 in clear)
        total = sum(l1 for _, l1, _ in sel)
        print(
            f"| (2^{lo}, 2^{hi}] | {len(sel)} | {np.median(gains):.2%} | {max(gains):.2%} | "
            f"{len(clear)} | {saved:,} of {total:,} |"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
