#!/usr/bin/env bash
# One node, 8 Ascend NPUs, data parallel + optimizer-parallel sharding, launched with msrun.
#   bash scripts/train_ascend_8p.sh CONFIG [extra train.py flags]
# Variables: WORKERS (8), MASTER_PORT (8118), LOG_DIR (logs/train_8p), SHARD (optimizer shard size, -1 = all)
set -euo pipefail
cd "$(dirname "$0")/.."
# msrun starts workers with the `python` on PATH: prefer the project environment
[ -x .venv/bin/python ] && export PATH="$PWD/.venv/bin:$PATH"
CONFIG=${1:?usage: $0 CONFIG [train.py flags]}; shift
WORKERS=${WORKERS:-8}
msrun --worker_num="$WORKERS" --local_worker_num="$WORKERS" --master_port="${MASTER_PORT:-8118}" \
      --log_dir="${LOG_DIR:-logs/train_8p}" --join=True \
      train.py --config "$CONFIG" --environment.device_target Ascend --environment.distributed true \
      --environment.parallel_optimizer true --environment.optimizer_shard_size "${SHARD:--1}" "$@"
