#!/usr/bin/env bash
# Stop the Ray nodes started by start_head.sh / start_worker.sh on this machine (all Ray processes here).
set -euo pipefail
RAY_AUTH_MODE=token ray stop
