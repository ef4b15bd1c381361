#!/usr/bin/env bash
# The main job end to end on the bundled default: real gradients are compressed with the bundled
# SmolLM2-135M language model (llama.cpp backend, CPU), inspected, decompressed and compared bit for
# bit, next to the built-in adaptive prior and lzma on the same bytes.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
out=${LMGC_DEMO_OUT:-demo-out}
mkdir -p "$out"
# 256 real float32 gradients (9 tokens each). A CPU LM is bound by the number of sequential steps,
# so short windows (256 tokens) run side by side as one batch of 9 windows.
python - "$out" <<'PY'
import sys, numpy as np
g = np.load("tests/data/mlp_grads_8k.npy")
np.save(f"{sys.argv[1]}/grads.npy", g[:256])
np.save(f"{sys.argv[1]}/grads_8k.npy", g)
PY
set -x
lmgc plugins
lmgc compress "$out/grads.npy" --prior llamacpp --window 256 --batch 16 -o "$out/grads.lmgc"
lmgc info "$out/grads.lmgc"
lmgc decompress "$out/grads.lmgc" -o "$out/grads_back.npy"
cmp <(python -c "import numpy as np,sys; sys.stdout.buffer.write(np.load('$out/grads.npy').tobytes())") \
    <(python -c "import numpy as np,sys; sys.stdout.buffer.write(np.load('$out/grads_back.npy').tobytes())")
lmgc compress "$out/grads_8k.npy" --prior adaptive -o "$out/grads_8k.lmgc"
lmgc decompress "$out/grads_8k.lmgc" -o "$out/grads_8k_back.npy"
set +x
python - "$out" <<'PY'
import lzma, os, sys, numpy as np
out = sys.argv[1]
for name in ("grads", "grads_8k"):
    a, b = np.load(f"{out}/{name}.npy"), np.load(f"{out}/{name}_back.npy")
    assert a.tobytes() == b.tobytes(), name
    size = os.path.getsize(f"{out}/{name}.lmgc")
    xz = len(lzma.compress(a.tobytes(), preset=9 | lzma.PRESET_EXTREME))
    print(f"{name}: {a.nbytes} bytes -> lmgc {size} ({100 * size / a.nbytes:.2f}%), "
          f"lzma {xz} ({100 * xz / a.nbytes:.2f}%), round trip bit-exact")
PY
