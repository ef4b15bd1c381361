#!/usr/bin/env bash
# The C kernels under AddressSanitizer and UndefinedBehaviorSanitizer: builds them so into a
# scratch copy of the tree, then runs the tests that drive them (the kernels' own, the committed
# fixtures, corrupted and hostile streams) and the fuzz tests with many more cases. A read or
# write out of bounds, or undefined behaviour, stops the run. CI runs it after the tests;
# run `bash scripts/setup.sh` first. Extra arguments go to pytest.
#   LMGC_FUZZ_CASES  cases per fuzz test (default here 1500; 40-60 in the everyday suite)
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# the tracked files as they are in the working tree (not the built kernels)
git ls-files -z | xargs -0 cp --parents -t "$work"
include=$(python -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
suffix=$(python -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
flags=(-O3 -g1 -fwrapv -fPIC -shared -fno-omit-frame-pointer
  -fsanitize=address,undefined -fno-sanitize-recover=all)
pids=()
for kernel in float fast delta; do
  gcc "${flags[@]}" -I "$work/plugins/lmgc_float" -I "$include" \
    "$work/plugins/lmgc_float/_${kernel}_kernels.c" \
    -o "$work/plugins/lmgc_float/_${kernel}_kernels$suffix" &
  pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done
export LD_PRELOAD
LD_PRELOAD=$(gcc -print-file-name=libasan.so)
# detect_leaks: CPython keeps its objects to the end; allocator_may_return_null: the tests that
# declare terabytes expect a MemoryError, not ASan's abort.
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:allocator_may_return_null=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export PYTHONPATH="$work:$work/plugins" LMGC_FUZZ_CASES="${LMGC_FUZZ_CASES:-1500}"
cd "$work"
# the sanitized kernels are the ones imported, and ASan is in the process
LMGC_SANITIZED="$work" python - <<'PY'
import importlib, os
work = os.environ["LMGC_SANITIZED"]
for name in ("_float_kernels", "_fast_kernels", "_delta_kernels"):
    path = importlib.import_module(f"lmgc_float.{name}").__file__
    assert path.startswith(work), f"{name} comes from {path}, not the sanitized build"
assert "libasan" in open("/proc/self/maps").read(), "AddressSanitizer is not loaded"
print("the kernels of", work, "under AddressSanitizer and UndefinedBehaviorSanitizer")
PY
# peak-memory tests (marker rss) are left out: ASan's shadow memory and quarantine are counted
python -m pytest -q -p no:cacheprovider -m "not lm and not rss" \
  tests/plugins/lmgc_float tests/files/test_fixtures.py tests/files/test_hostile_archives.py \
  tests/stream/test_corruption.py tests/stream/test_hostile_blocks.py \
  tests/coding/test_delta_pipeline.py "$@"
