# The README's two commands: `make demo` (the main job) and `make test` (the full suite). Both set up first.
PY := .venv/bin/python

.PHONY: setup demo demo-sandbox test test-fast bench clean-sandbox

setup:
	bash scripts/setup.sh

demo: setup
	bash scripts/demo.sh $(ARGS)

demo-sandbox: setup
	$(PY) -m sandbox demo
	$(PY) -m rewards eval --tasks embedded --completions canonical

test: setup
	PYTHONFAULTHANDLER=1 $(PY) -m pytest -q tests

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
