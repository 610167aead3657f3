#!/usr/bin/env bash
# `make demo`: the tiny-cpu RLVR run submitted as a Ray job, exactly as on a cluster. Starts a local Ray head
# (loopback only, token auth on) if none answers, and leaves the checkpoint, TensorBoard logs and an HTML
# report under runs/tiny-cpu-<time>/. The last stdout line is the run's JSON summary.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH" RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 RAY_AUTH_MODE=token
log() { echo "[demo] $*" >&2; }
dashboard=${CRUCIBLE_RAY_DASHBOARD:-http://127.0.0.1:8265}

[ -f "$HOME/.ray/auth_token" ] || ray get-auth-token --generate >/dev/null 2>&1
if ! ray status --address 127.0.0.1:6379 >/dev/null 2>&1; then
  log "no Ray head on 127.0.0.1:6379; starting one (stop it with: ray stop)"
  ray start --head --node-ip-address=127.0.0.1 --port=6379 --num-cpus="$(nproc)" --include-dashboard=true \
    --dashboard-host=127.0.0.1 --dashboard-port="${dashboard##*:}" --metrics-export-port=8080 \
    --disable-usage-stats >&2
fi
log "submitting the tiny-cpu RLVR job to $dashboard (metrics: http://127.0.0.1:8080/metrics)"
out=$(mktemp)
trap 'rm -f "$out"' EXIT
ray job submit --address "$dashboard" --working-dir . -- \
  python -m learner --config configs/rlvr/tiny-cpu.yaml run.out_dir="$PWD/runs/tiny-cpu-$(date +%Y%m%d-%H%M%S)" "$@" | tee "$out" >&2
summary=$(grep -E '^\{.*"steps"' "$out" | tail -1)
[ -n "$summary" ] || { log "the job printed no summary"; exit 1; }
echo "$summary"
