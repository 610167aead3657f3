"""Supervised fine-tuning data: samples mined from a C++ codebase (files, tree-sitter definitions,
question/answer pairs, bug-fix pairs from git history) and the embedded task set,
written as Alpaca and chat JSONL.

`python -m sft data --config configs/sft/tiny-cpu.yaml` builds a dataset; see `sft.dataset.build_dataset`.
"""
