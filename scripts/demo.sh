#!/usr/bin/env bash
# The main job end to end: the same real gradients compressed three ways, every stream decoded
# and compared bit for bit:
#   1. the bundled SmolLM2-135M language model alone (llama.cpp, CPU). On gradients it costs more
#      than 4 bits per hex digit (it guesses the noise digits of the mantissa badly), so its coded
#      blocks would be larger than the data: lmgc stores that part raw instead (never expand, as
#      zstd and xz do; docs/format.md "Stored parts") and records the LM's own code length, which
#      is printed as a measurement next to what was written. Nothing of the LM decodes that
#      stream, so its header carries no fingerprint of the model or of llama.cpp's CPU features:
#      its size is the same on any machine, and it decompresses without the model;
#   2. the fast prior alone ($LMGC_DEMO_FAST, default: float, the default prior);
#   3. the mixture of both (`mix`: the LM consulted on the two leading hex digits of each value,
#      where it carries information), which codes within a few bits per window of its best expert:
#      its own stream (fallback=false), and what `mix` keeps by default: the smaller of that and
#      the fast expert's stream, so the mixture is never larger than the fast prior.
# lzma on the same bytes for reference. LMGC_DEMO_FLOATS sets how many floats (default 512).
# Every file written is checked to be no larger than the input .npy file.
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
import lzma, os, sys, zipfile, numpy as np
from lmgc_core.stream import container
out, fast = sys.argv[1], sys.argv[2]


def streams(path):
    """The CLI's output as streams: one for a small .npy (the compact form), else a zip's."""
    if not zipfile.is_zipfile(path):
        return [open(path, "rb").read()]
    with zipfile.ZipFile(path) as z:
        return [z.read(n) for n in z.namelist() if n.endswith(".lmgc")]


def coded_bytes(path):
    """Bytes of the blocks (no zip, manifest or header), and the bytes the prior's own coding
    took where a part was stored raw because that coding was larger (its header records it)."""
    blocks = refused = 0
    for blob in streams(path):
        for part in container.read_header(blob)[0]["parts"]:
            size = sum(s for s, _ in part["blocks"])
            blocks += size
            refused += part["stored"]["steps"] if part.get("coding") == "stored" else size
    return blocks, refused


a = np.load(f"{out}/grads.npy")
source = os.path.getsize(f"{out}/grads.npy")
xz = len(lzma.compress(a.tobytes(), preset=9 | lzma.PRESET_EXTREME))
print(f"{a.size} real float32 gradients: {a.nbytes} bytes of data, a {source}-byte .npy file; "
      f"lzma -9e of the data: {xz} ({100 * xz / a.nbytes:.2f}%)")
sizes = {}
labels = {"lm": "SmolLM2 alone", "fast": f"{fast} alone", "mixture": "mixture's stream",
          "mix": "mix (kept)"}
for name, label in labels.items():
    b = np.load(f"{out}/{name}_back.npy")
    assert a.tobytes() == b.tobytes(), name
    size = os.path.getsize(f"{out}/{name}.lmgc")
    blocks, own = coded_bytes(f"{out}/{name}.lmgc")
    sizes[name] = (size, blocks)
    print(f"  {label:<16} {size:>6} bytes ({100 * size / a.nbytes:6.2f}% of the data), blocks "
          f"{blocks:>6} ({100 * blocks / a.nbytes:6.2f}%), round trip bit-exact")
    if own != blocks:
        bits = 8 * own / (2 * a.nbytes)  # two hex digits a byte
        print(f"  {'':<16} the prior's own coding took {own} bytes ({100 * own / a.nbytes:.2f}%, "
              f"{bits:.2f} bits per hex digit): stored raw instead")
    assert blocks <= a.nbytes, f"{name}: blocks larger than the data"
    assert size <= source, f"{name}: {size} bytes, larger than the {source}-byte input"
gain = sizes["fast"][1] - sizes["mixture"][1]
print(f"  mixture's stream vs {fast} alone: {gain:+d} bytes of blocks "
      f"({'smaller' if gain >= 0 else 'larger'})")
kept = "the mixture's" if sizes["mix"][0] < sizes["fast"][0] else f"{fast}'s"
assert sizes["mix"][0] <= sizes["fast"][0], "mix must never be larger than its fast expert"
print(f"  mix keeps {kept} stream: {sizes['mix'][0]} <= {sizes['fast'][0]} bytes ({fast} alone)")
print(f"  every file written is at most the {source}-byte input")
PY
