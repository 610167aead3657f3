#!/usr/bin/env bash
# `make demo`, the README's main job: the whole pipeline on the embedded default (nothing downloaded):
# tiny pretrain -> tiny SFT on the embedded tasks -> tiny-cpu RLVR submitted as Ray jobs (one per seed) to a
# local Ray head started and stopped here -> held-out evaluation of every stage -> runs/demo/report.html.
# Stages whose outputs exist are reused. Extra arguments are key=value overrides of configs/pipeline/tiny-cpu.yaml,
# e.g. `make demo ARGS="rlvr.seeds=[0] out_dir=runs/demo-1seed"`. The last stdout line is the JSON summary.
set -euo pipefail
cd "$(dirname "$0")/.."
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0  # else Ray rewrites 127.0.0.1 to the machine's external address
exec .venv/bin/python -m scripts.pipeline --config "${CRUCIBLE_PIPELINE_CONFIG:-configs/pipeline/tiny-cpu.yaml}" "$@"
