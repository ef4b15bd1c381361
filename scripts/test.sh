#!/usr/bin/env bash
# Sets up the environment, then runs the whole test-suite (real SmolLM2 model included).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not lm and not slow"` for the
# everyday subset (under 3 minutes; docs/architecture.md#tests).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
ruff check .
ruff format --check .  # the formatter's layout, except where a line says `# fmt: skip`
# pytest exits 5 when it collects no test: set -e turns that into a failure, as it should.
python -m pytest "$@"
