"""`make gpu-check` dry-runs on a machine without CUDA: every GPU stage says "skipped: no CUDA" after the
configs its commands would load were validated, and the script exits 0; a config that no longer validates
makes it exit 1. So the script cannot rot between the sessions that have a GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scripts import gpu_check

REPO = Path(__file__).resolve().parents[2]


def test_the_dry_run_skips_every_gpu_stage_and_exits_0(tmp_path):
    out = tmp_path / "results.jsonl"
    proc = subprocess.run([sys.executable, "-m", "scripts.gpu_check", "run", "--out", str(out),
                           "--work", str(tmp_path / "work")], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["stage"] for r in rows] == [s.name for s in gpu_check.STAGES]  # one line per stage, in order
    env = rows[0]
    assert env["status"] == "ok" and "import_errors" not in env, env
    assert all(r["status"] == "skipped: no CUDA" for r in rows[1:]), rows
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["cuda"] is False and summary["failed"] == []


def test_every_planned_command_loads_a_valid_config(tmp_path):
    commands = gpu_check.planned_commands(tmp_path)
    assert set(commands) <= {s.name for s in gpu_check.STAGES}
    for stage, args_list in commands.items():
        for args in args_list:
            gpu_check.validate_command(args)  # raises ConfigError if a preset or override went stale


def test_a_stale_override_fails_the_dry_run(tmp_path, monkeypatch):
    from configs.loader import ConfigError

    with pytest.raises(ConfigError, match="no_such_field"):
        gpu_check.validate_command(gpu_check.pretrain_args(tmp_path, "train.no_such_field=1"))
    monkeypatch.setattr(gpu_check, "cuda_available", lambda: False)
    monkeypatch.setattr(gpu_check, "planned_commands",
                        lambda work: {"pretrain_sdpa": [gpu_check.pretrain_args(work, "train.no_such_field=1")]})
    summary = gpu_check.run_stages(tmp_path / "r.jsonl", tmp_path / "w", ["pretrain_sdpa"], 60)
    assert summary["failed"] == ["pretrain_sdpa"]


def test_last_json_reads_the_summary_line():
    assert gpu_check.last_json('noise\n{"a": 1}\n[progress]\n') == {"a": 1}
    with pytest.raises(ValueError):
        gpu_check.last_json("no json here")


def test_the_grpo_stage_body_runs_on_cpu_at_small_scale():
    """The GPU stage's own code (policy + KL reference, bf16 compute over fp32 masters at lr 5e-7, chunked
    log-probs, activation checkpointing, the bucketed weight source) runs end to end here on the tiny policy, so
    the GPU run fails only for GPU reasons."""
    from learner.tiny_policy import build_tiny_policy

    result = gpu_check.grpo_worker(str(build_tiny_policy()), groups=2, prompt_len=16, completion_len=24, steps=2,
                                   bucket_mb=0.1)
    assert result["device"] == "cpu" and result["master_dtypes"] == ["torch.float32"]
    assert result["fraction_weights_changed"] > 0.9 and result["kl"] > 0
    assert result["stream_buckets"] > 1 and result["largest_tensor_mb"] > 0.1  # buckets smaller than a tensor
