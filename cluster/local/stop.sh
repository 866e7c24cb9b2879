#!/usr/bin/env bash
# Stop the Ray nodes that start_head.sh / start_worker.sh started on this machine, and only those.
#
#   cluster/local/stop.sh                       # the nodes under ${TMPDIR:-/tmp}/mmray-*
#   TEMP_DIRS="/tmp/mmray-head" cluster/local/stop.sh
#
# Not `ray stop`: that stops every Ray process of this user on the machine, including a laptop's own
# `mm-ray demo` or another cluster. Every process of a node names its temp dir on its command line.
set -euo pipefail
TEMP_DIRS=${TEMP_DIRS:-$(ls -d "${TMPDIR:-/tmp}"/mmray-* 2>/dev/null || true)}
for dir in $TEMP_DIRS; do
  pids=$(pgrep -f -- "$dir([/ ]|$)" || true)
  [ -n "$pids" ] || continue
  echo "stopping the Ray node in $dir (pids: $(echo $pids))"
  kill $pids 2>/dev/null || true
done
sleep 5
for dir in $TEMP_DIRS; do   # whatever ignored SIGTERM
  pids=$(pgrep -f -- "$dir([/ ]|$)" || true)
  [ -z "$pids" ] || kill -9 $pids 2>/dev/null || true
done
