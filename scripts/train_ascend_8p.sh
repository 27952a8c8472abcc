#!/usr/bin/env bash
# One node, 8 Ascend NPUs: data parallel with ZeRO stage 2 (AdamW moments and gradients split over the ranks,
# explicit HCCL collectives: exvideo_ms/train/zero.py; tests/test_zero.py proves the same code on 2 CPU workers).
#   bash scripts/train_ascend_8p.sh CONFIG [extra train.py flags]
# Variables: WORKERS (8), ZERO_STAGE (2; 0/1/2), MASTER_PORT (8118), LOG_DIR (logs/train_8p: one worker_<rank>.log
#   per rank), BIND_CORE (true: msrun pins each worker to its own CPU cores), PRINT_ONLY (1: print the command)
# Before: `source /usr/local/Ascend/ascend-toolkit/set_env.sh` (CANN's environment; the path of your install).
set -euo pipefail
cd "$(dirname "$0")/.."
# msrun starts workers with the `python` on PATH: prefer the project environment
[ -x .venv/bin/python ] && export PATH="$PWD/.venv/bin:$PATH"
usage() { echo "usage: $0 CONFIG [train.py flags]" >&2; exit 2; }
CONFIG=${1:-}; [ -n "$CONFIG" ] || usage; shift
[ -f "$CONFIG" ] || { echo "$0: config file not found: $CONFIG" >&2; exit 2; }
WORKERS=${WORKERS:-8}; ZERO_STAGE=${ZERO_STAGE:-2}
[[ "$WORKERS" =~ ^[1-9][0-9]*$ ]] || { echo "$0: WORKERS must be a positive integer, got '$WORKERS'" >&2; exit 2; }
[[ "$ZERO_STAGE" =~ ^[012]$ ]] || { echo "$0: ZERO_STAGE must be 0, 1 or 2, got '$ZERO_STAGE'" >&2; exit 2; }
cmd=(msrun --worker_num="$WORKERS" --local_worker_num="$WORKERS" --master_port="${MASTER_PORT:-8118}"
     --log_dir="${LOG_DIR:-logs/train_8p}" --bind_core="${BIND_CORE:-True}" --join=True
     train.py --config "$CONFIG" --environment.device_target Ascend --environment.distributed true
     --environment.zero_stage "$ZERO_STAGE" "$@")
if [ "${PRINT_ONLY:-0}" = 1 ]; then printf '%q ' "${cmd[@]}"; echo; exit 0; fi
exec "${cmd[@]}"
