#!/usr/bin/env bash
# Start a Docker daemon if none answers. The sandbox needs no container networking, so the daemon runs
# without a bridge or iptables rules (works in VMs and CI machines where those are unavailable).
set -euo pipefail
if docker info >/dev/null 2>&1; then exit 0; fi
command -v dockerd >/dev/null || { echo "dockerd not installed (apt-get install docker.io)" >&2; exit 1; }
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  systemctl start docker 2>/dev/null || true
fi
if ! docker info >/dev/null 2>&1; then
  log=/var/log/crucible-dockerd.log
  setsid nohup dockerd --bridge=none --iptables=false --ip6tables=false >"$log" 2>&1 < /dev/null &
fi
for _ in $(seq 1 60); do
  docker info >/dev/null 2>&1 && exit 0
  sleep 0.5
done
echo "dockerd did not come up; see /var/log/crucible-dockerd.log" >&2
exit 1
