#!/usr/bin/env bash
# Set up a virtual environment and run the checks: ruff, mypy and the test suite, then the
# model-family tests again on the lowest supported transformers.
# Extra arguments go to the first pytest run; slow end-to-end runs are skipped unless asked for
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

# The low end of the supported range (pyproject.toml: transformers>=4.46, peft>=0.12): the
# published LLaDA/Dream/MMaDA code is loaded, sampled, scored and trained again with
# transformers 4.46.1 (4.46.0 is yanked) and peft 0.12.0, plus the tokenizers and
# huggingface_hub of that release. They go into a small overlay directory that shadows the
# main environment's copies (same torch, so CI does not download torch twice).
LOWEST="transformers==4.46.1 tokenizers==0.20.3 huggingface_hub==0.26.5 peft==0.12.0"
if [ "$(cat .venv-lowest/.installed 2>/dev/null)" != "$LOWEST" ]; then
  rm -rf .venv-lowest
  # shellcheck disable=SC2086
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps \
    --target .venv-lowest $LOWEST
  echo "$LOWEST" > .venv-lowest/.installed
fi
PYTHONPATH=.venv-lowest MASKGRPO_EXPECT_TRANSFORMERS=4.46.1 \
  .venv/bin/python -m pytest -q -p no:cacheprovider -p no:warnings tests/families
