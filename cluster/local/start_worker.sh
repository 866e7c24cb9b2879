#!/usr/bin/env bash
# Start a worker node that joins the head at $GCS (host:port), with the cluster's token.
#
#   GCS=10.0.0.5:6379 CPUS=8 RESOURCES='{"preprocess": 1}' cluster/local/start_worker.sh
#
# On the head's own machine give each extra node its own TEMP_DIR and ports (NODE=2, 3, ... does both).
set -euo pipefail
: "${GCS:?set GCS=HEAD_IP:PORT (printed by start_head.sh)}"
NODE=${NODE:-2}
CPUS=${CPUS:-$(nproc)}
RESOURCES=${RESOURCES:-"{\"node$NODE\": 1}"}
TEMP_DIR=${TEMP_DIR:-${TMPDIR:-/tmp}/mmray-node$NODE}
IP=${NODE_IP:-127.0.0.1}
BASE=$((52000 + 10 * NODE))   # distinct agent ports per node on one machine

export RAY_AUTH_MODE=token
export RAY_AUTH_TOKEN_PATH=${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}

ray start --address="$GCS" --node-ip-address="$IP" --num-cpus="$CPUS" --resources="$RESOURCES" \
  --temp-dir="$TEMP_DIR" --dashboard-agent-listen-port=$BASE --metrics-export-port=$((BASE + 1)) \
  --runtime-env-agent-port=$((BASE + 2)) --disable-usage-stats
