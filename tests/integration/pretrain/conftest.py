"""Shared by the pretraining integration tests: the tiny preset's data stages, built once per session through
the real CLI (embedded corpus -> BPE -> shards), and a helper that runs `python -m pretrain` in a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
PRESET = REPO / "configs" / "pretrain" / "tiny-cpu.yaml"
# Smaller than the preset so every run takes seconds: a capped corpus, short windows, no compile eval.
FAST = ["corpus.max_files=300", "tokenizer.vocab_size=1024", "data.seq_len=128", "data.micro_batch_size=4",
        "model.context=256", "eval.compile_prompts=0", "eval.fim_examples=2", "eval.val_windows=8",
        "tensorboard=false"]


def run_pretrain(args: list[str], timeout: float = 600, env: dict | None = None,
                 launcher: list[str] | None = None) -> tuple[subprocess.CompletedProcess, dict]:
    """Run the CLI; returns the process and its last stdout line parsed as JSON."""
    cmd = [*(launcher or [sys.executable]), "-m", "pretrain", *args]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    lines = proc.stdout.strip().splitlines()
    summary = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}
    return proc, summary


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pretrain-data")
    proc, summary = run_pretrain(["shards", "--config", str(PRESET), f"out_dir={out}", *FAST])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert summary["train_tokens"] > 100_000
    return out


def with_data(tiny_data: Path, out_dir: Path) -> Path:
    """A fresh run directory holding a copy of the prepared data (runs write checkpoints next to it)."""
    for name in ("corpus", "tokenizer", "shards"):
        shutil.copytree(tiny_data / name, out_dir / name)
    return out_dir
