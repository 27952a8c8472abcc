#!/usr/bin/env bash
# Two CPU workers, data parallel (the test suite checks this equals one process with twice the batch).
#   bash scripts/train_cpu_2p.sh CONFIG [extra train.py flags]
# Variables: MASTER_PORT (8119), LOG_DIR (logs/train_cpu_2p)
set -euo pipefail
cd "$(dirname "$0")/.."
# msrun starts workers with the `python` on PATH: prefer the project environment
[ -x .venv/bin/python ] && export PATH="$PWD/.venv/bin:$PATH"
CONFIG=${1:?usage: $0 CONFIG [train.py flags]}; shift
MSRUN=${MSRUN:-msrun}
"$MSRUN" --worker_num=2 --local_worker_num=2 --master_port="${MASTER_PORT:-8119}" \
      --log_dir="${LOG_DIR:-logs/train_cpu_2p}" --join=True \
      train.py --config "$CONFIG" --environment.device_target CPU --environment.distributed true "$@"
