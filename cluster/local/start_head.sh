#!/usr/bin/env bash
# Start the head node of an mm_ray cluster, with token authentication.
#
#   cluster/local/start_head.sh                 # CPUS=4 DASHBOARD_PORT=8265 GCS_PORT=6379 TEMP_DIR=...
#
# Prints the address the workers join and the dashboard URL that `mm-ray submit --address` takes. The token
# is generated once into $RAY_AUTH_TOKEN_PATH (default ~/.ray/auth_token); copy that file to every worker
# node and every machine that submits jobs (or export RAY_AUTH_TOKEN there).
set -euo pipefail
CPUS=${CPUS:-$(nproc)}
GCS_PORT=${GCS_PORT:-6379}
DASHBOARD_PORT=${DASHBOARD_PORT:-8265}
# Each node of a machine needs its own temp dir: nodes sharing one remove each other's job packages.
TEMP_DIR=${TEMP_DIR:-${TMPDIR:-/tmp}/mmray-head}
IP=${NODE_IP:-127.0.0.1}   # this node's address as the other nodes reach it (127.0.0.1 = one machine)
# The dashboard (and the job API behind it) listens on loopback only unless asked: from another machine,
# reach it through an SSH tunnel (ssh -L 8265:127.0.0.1:8265 head) rather than plain http on the network.
DASHBOARD_HOST=${DASHBOARD_HOST:-127.0.0.1}

export RAY_AUTH_MODE=token
export RAY_AUTH_TOKEN_PATH=${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}
if [ ! -s "$RAY_AUTH_TOKEN_PATH" ]; then
  # The umask first, in a subshell: the file is created private (0600), never readable by others even for
  # the moment before a chmod; its directory too, if this makes it.
  (
    umask 077
    mkdir -p "$(dirname "$RAY_AUTH_TOKEN_PATH")"
    python3 -c 'import secrets; print(secrets.token_hex(32))' > "$RAY_AUTH_TOKEN_PATH"
  )
  chmod 600 "$RAY_AUTH_TOKEN_PATH"   # an existing empty file keeps its old mode otherwise
fi

ray start --head --node-ip-address="$IP" --port="$GCS_PORT" --num-cpus="$CPUS" \
  --include-dashboard=true --dashboard-host="$DASHBOARD_HOST" --dashboard-port="$DASHBOARD_PORT" \
  --temp-dir="$TEMP_DIR" --disable-usage-stats

echo "workers join with:  GCS=$IP:$GCS_PORT cluster/local/start_worker.sh"
echo "submit jobs with:   mm-ray submit --address http://$IP:$DASHBOARD_PORT --token-file $RAY_AUTH_TOKEN_PATH -- demo"
