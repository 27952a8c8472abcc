#!/usr/bin/env bash
# Several nodes of Ascend NPUs; run on every node with the same master address.
#   bash scripts/train_ascend_multinode.sh MASTER_ADDR NODE_RANK NUM_NODES [WORKERS_PER_NODE] -- CONFIG [flags]
# Variables: MASTER_PORT (8118), LOG_DIR (logs/train_multinode), SHARD (optimizer shard size, -1 = all)
set -euo pipefail
cd "$(dirname "$0")/.."
# msrun starts workers with the `python` on PATH: prefer the project environment
[ -x .venv/bin/python ] && export PATH="$PWD/.venv/bin:$PATH"
MASTER_ADDR=${1:?master address}; NODE_RANK=${2:?node rank}; NUM_NODES=${3:?number of nodes}
PER_NODE=8
if [ "${4:-}" != "--" ] && [ -n "${4:-}" ]; then PER_NODE=$4; shift; fi
shift 3; [ "${1:-}" = "--" ] && shift
CONFIG=${1:?config}; shift
msrun --worker_num=$((NUM_NODES * PER_NODE)) --local_worker_num="$PER_NODE" --master_addr="$MASTER_ADDR" \
      --master_port="${MASTER_PORT:-8118}" --node_rank="$NODE_RANK" --log_dir="${LOG_DIR:-logs/train_multinode}" \
      --join=True \
      train.py --config "$CONFIG" --environment.device_target Ascend --environment.distributed true \
      --environment.parallel_optimizer true --environment.optimizer_shard_size "${SHARD:--1}" "$@"
