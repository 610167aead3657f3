"""Supervised fine-tuning: SFT data mined from a C++ codebase (files, tree-sitter definitions, question/answer
pairs, bug-fix pairs from git history) and the embedded task set, written as Alpaca and chat JSONL; then
prompt-masked, padding-free packed SFT with TRL + PEFT (full, LoRA, QLoRA), `merge` and `compare`.

`python -m sft --config configs/sft/tiny-cpu.yaml` builds the data and trains; see docs/sft.md.
"""
