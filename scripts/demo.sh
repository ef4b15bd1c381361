#!/usr/bin/env bash
# The main job end to end: the same real gradients compressed three ways, every stream decoded
# and compared bit for bit:
#   1. the bundled SmolLM2-135M language model alone (llama.cpp, CPU): it expands gradients;
#   2. the fast prior alone ($LMGC_DEMO_FAST, default: float, the default prior);
#   3. the mixture of both (`mix`: the LM consulted on the two leading hex digits of each value,
#      where it carries information), which codes within a few bits per window of its best expert:
#      its own stream (fallback=false), and what `mix` keeps by default: the smaller of that and
#      the fast expert's stream, so the mixture is never larger than the fast prior.
# lzma on the same bytes for reference. LMGC_DEMO_FLOATS sets how many floats (default 512).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
out=${LMGC_DEMO_OUT:-demo-out}
fast=${LMGC_DEMO_FAST:-float}
floats=${LMGC_DEMO_FLOATS:-512}
mkdir -p "$out"
python - "$out" "$floats" <<'PY'
import sys, numpy as np
g = np.load("tests/data/mlp_grads_8k.npy")
np.save(f"{sys.argv[1]}/grads.npy", g[: int(sys.argv[2])])
PY
experts="[{\"name\": \"llamacpp\", \"consult\": [0, 1]}, {\"name\": \"$fast\"}]"
set -x
lmgc plugins
lmgc compress "$out/grads.npy" --prior llamacpp -o "$out/lm.lmgc" --force
lmgc compress "$out/grads.npy" --prior "$fast" -o "$out/fast.lmgc" --force
lmgc compress "$out/grads.npy" --prior mix -P "experts=$experts" -P fallback=false -o "$out/mixture.lmgc" --force
lmgc compress "$out/grads.npy" --prior mix -P "experts=$experts" -o "$out/mix.lmgc" --force
lmgc info "$out/mixture.lmgc"
for name in lm fast mixture mix; do
  rm -f "$out/${name}_back.npy"
  lmgc decompress "$out/$name.lmgc" -o "$out/${name}_back.npy"
done
set +x
python - "$out" "$fast" <<'PY'
import lzma, sys, zipfile, numpy as np
from lmgc_core import container
out, fast = sys.argv[1], sys.argv[2]


def coded_bytes(path):
    """Bytes of the coded blocks in the CLI's output (no zip, manifest or header): one stream
    for a small .npy (the compact form), else a zip of streams."""
    if not zipfile.is_zipfile(path):
        return sum(len(b) for b in container.unpack(open(path, "rb").read()).blocks)
    with zipfile.ZipFile(path) as z:
        streams = [z.read(n) for n in z.namelist() if n.endswith(".lmgc")]
    return sum(len(b) for s in streams for b in container.unpack(s).blocks)


a = np.load(f"{out}/grads.npy")
xz = len(lzma.compress(a.tobytes(), preset=9 | lzma.PRESET_EXTREME))
print(f"{a.size} real float32 gradients, {a.nbytes} bytes; lzma -9e: {xz} ({100 * xz / a.nbytes:.2f}%)")
sizes = {}
labels = {"lm": "SmolLM2 alone", "fast": f"{fast} alone", "mixture": "mixture's stream",
          "mix": "mix (kept)"}
for name, label in labels.items():
    b = np.load(f"{out}/{name}_back.npy")
    assert a.tobytes() == b.tobytes(), name
    blob = open(f"{out}/{name}.lmgc", "rb").read()
    coded = coded_bytes(f"{out}/{name}.lmgc")
    sizes[name] = (len(blob), coded)
    print(f"  {label:<16} {len(blob):>6} bytes ({100 * len(blob) / a.nbytes:6.2f}%), coded blocks "
          f"{coded:>6} ({100 * coded / a.nbytes:6.2f}%), round trip bit-exact")
gain = sizes["fast"][1] - sizes["mixture"][1]
print(f"  mixture's stream vs {fast} alone: {gain:+d} bytes of coded blocks "
      f"({'smaller' if gain >= 0 else 'larger'}); its header also records every expert's "
      "fingerprint (a few hundred bytes)")
kept = "the mixture's" if sizes["mix"][0] < sizes["fast"][0] else f"{fast}'s"
assert sizes["mix"][0] <= sizes["fast"][0], "mix must never be larger than its fast expert"
print(f"  mix keeps {kept} stream: {sizes['mix'][0]} <= {sizes['fast'][0]} bytes ({fast} alone)")
PY
