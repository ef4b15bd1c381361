#!/usr/bin/env bash
# Creates .venv (if needed) and installs lmgc with every extra. Idempotent: a second run is quick.
# torch is pinned to the CPU build first: an unpinned torch would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
stamp=.venv/.lmgc-installed
# the float prior's C kernels and their headers: the install compiles them, so a changed one
# (the delta kernel or a header included) means installing again
stale=0
for source in pyproject.toml plugins/lmgc_float/*.c plugins/lmgc_float/*.h; do
  if [ ! -f "$stamp" ] || [ "$source" -nt "$stamp" ]; then stale=1; fi
done
if [ "$stale" = 1 ]; then
  python -m pip install -q --upgrade pip setuptools wheel
  python -m pip install -q "torch==${LMGC_TORCH_VERSION:-2.13.0}"
  # llama-cpp-python compiles from source the first time (~8-10 minutes on 2 cores). A build for
  # the build machine's own CPU uses AMX where the CPU lists it, and some VMs list AMX but fault
  # on it (SIGSEGV in ggml_backend_amx_mul_mat, seen here): build for AVX2 without AMX instead,
  # unless CMAKE_ARGS says otherwise.
  export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON}"
  python -m pip install -q -e ".[all]"
  # pip may have taken an earlier native build from its wheel cache: if the installed llama.cpp
  # cannot evaluate a token, drop the cached wheel and build again with the flags above.
  if ! python scripts/check_llama.py >/dev/null 2>&1; then
    python -m pip cache remove llama_cpp_python >/dev/null 2>&1 || true
    python -m pip install -q --force-reinstall --no-deps \
      "llama-cpp-python==$(python -c 'import importlib.metadata as m; print(m.version("llama-cpp-python"))')"
    python scripts/check_llama.py
  fi
  touch "$stamp"
fi
# ZipNN, a benchmark peer (benchmarks/levels.py), without its requirements (they pull a CUDA torch).
python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('zipnn') is None)" ||
  python -m pip install -q --no-deps zipnn
# An editable install leaves the source tree without bytecode; where PYTHONDONTWRITEBYTECODE is
# set, every `lmgc` call would compile ~90 modules again (about 0.08 s of each start-up).
python -m compileall -q lmgc_core plugins >/dev/null
