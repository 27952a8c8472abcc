#!/usr/bin/env bash
# Set up (or update) the project's virtual environment in .venv: `bash scripts/setup.sh` for inference
# and training, `bash scripts/setup.sh test` for the test suite and benchmarks as well (PyTorch CPU,
# diffusers, transformers, open_clip and k-diffusion as independent references).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# requirements/constraints.txt pins the MindSpore release CI runs (pyproject.toml allows a range)
if [ "${1:-}" = "test" ]; then
  .venv/bin/python -m pip install -q -c requirements/constraints.txt -e ".[test]"
  # their declared dependencies pull torchvision, which does not import beside torch 2.13 CPU
  .venv/bin/python -m pip install -q --no-deps -r requirements/test-nodeps.txt
else
  .venv/bin/python -m pip install -q -c requirements/constraints.txt -e .
fi
