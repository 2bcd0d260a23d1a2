#!/usr/bin/env bash
# Set up a virtual environment and run the checks: ruff, mypy and the test suite.
# Extra arguments go to pytest; slow end-to-end runs are skipped unless asked for
# (`bash scripts/test.sh -m slow` runs only those, `-m "slow or not slow"` everything).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1

# The code-execution rewards run programs inside bubblewrap.
if ! command -v bwrap >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null
  else
    echo "warning: bubblewrap (bwrap) is not installed; sandbox tests will be skipped." \
         "Install it with: sudo apt-get install bubblewrap" >&2
  fi
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[dev]"

.venv/bin/ruff check src tests benchmarks
.venv/bin/mypy src/maskgrpo
.venv/bin/python -m pytest -q "$@"
