#!/usr/bin/env bash
# Several nodes of Ascend NPUs, data parallel with ZeRO stage 2; run this on every node with the same master.
#   bash scripts/train_ascend_multinode.sh MASTER_ADDR NODE_RANK NUM_NODES [WORKERS_PER_NODE] -- CONFIG [flags]
# The `--` is required: it separates the launch arguments from the config and train.py's flags.
# Variables: ZERO_STAGE (2; 0/1/2), MASTER_PORT (8118), LOG_DIR (logs/train_multinode/node_<NODE_RANK>: one
#   worker_<rank>.log per rank), BIND_CORE (true), PRINT_ONLY (1: print the command and exit)
# Before, on every node:
#   source /usr/local/Ascend/ascend-toolkit/set_env.sh     # CANN's environment (the path of your install)
#   export HCCL_SOCKET_IFNAME=eth0    # the network interface HCCL's host sockets use (as `ip addr` names it)
#   export HCCL_IF_IP=<this node's IP on that interface>    # optional, when the node has several addresses
#   export HCCL_CONNECT_TIMEOUT=600   # seconds HCCL waits for the other nodes (slow-starting clusters)
# MASTER_ADDR is node 0's IP, reachable from every node on MASTER_PORT.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] && export PATH="$PWD/.venv/bin:$PATH"
usage() {
  echo "usage: $0 MASTER_ADDR NODE_RANK NUM_NODES [WORKERS_PER_NODE] -- CONFIG [train.py flags]" >&2
  [ -n "${1:-}" ] && echo "$0: $1" >&2
  exit 2
}
[ $# -ge 5 ] || usage "too few arguments"
MASTER_ADDR=$1; NODE_RANK=$2; NUM_NODES=$3; shift 3
PER_NODE=8
if [ "$1" != "--" ]; then PER_NODE=$1; shift; fi
[ "${1:-}" = "--" ] || usage "expected '--' before the config, got '${1:-}'"
shift
CONFIG=${1:-}; [ -n "$CONFIG" ] || usage "no config after '--'"; shift
case "$MASTER_ADDR" in -*|"") usage "MASTER_ADDR must be node 0's address, got '$MASTER_ADDR'";; esac
[[ "$NUM_NODES" =~ ^[1-9][0-9]*$ ]] || usage "NUM_NODES must be a positive integer, got '$NUM_NODES'"
[[ "$NODE_RANK" =~ ^[0-9]+$ ]] && [ "$NODE_RANK" -lt "$NUM_NODES" ] \
  || usage "NODE_RANK must be an integer in [0, $NUM_NODES), got '$NODE_RANK'"
[[ "$PER_NODE" =~ ^[1-9][0-9]*$ ]] || usage "WORKERS_PER_NODE must be a positive integer, got '$PER_NODE'"
[ -f "$CONFIG" ] || usage "config file not found: $CONFIG"
ZERO_STAGE=${ZERO_STAGE:-2}
[[ "$ZERO_STAGE" =~ ^[012]$ ]] || usage "ZERO_STAGE must be 0, 1 or 2, got '$ZERO_STAGE'"
cmd=(msrun --worker_num=$((NUM_NODES * PER_NODE)) --local_worker_num="$PER_NODE" --master_addr="$MASTER_ADDR"
     --master_port="${MASTER_PORT:-8118}" --node_rank="$NODE_RANK"
     --log_dir="${LOG_DIR:-logs/train_multinode/node_$NODE_RANK}" --bind_core="${BIND_CORE:-True}" --join=True
     train.py --config "$CONFIG" --environment.device_target Ascend --environment.distributed true
     --environment.zero_stage "$ZERO_STAGE" "$@")
if [ "${PRINT_ONLY:-0}" = 1 ]; then printf '%q ' "${cmd[@]}"; echo; exit 0; fi
exec "${cmd[@]}"
