"""`python -m pretrain` end to end on the embedded default: stages, summary, checkpoints, metrics, evals,
stage skipping, exact resume after SIGKILL, and bad input."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.integration.pretrain.conftest import FAST, PRESET, REPO, run_pretrain, with_data

pytestmark = pytest.mark.slow


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_full_pipeline_from_an_empty_directory(tmp_path):
    """All stages from nothing, with the real compile-rate eval (bubblewrap sandbox) and FIM exact-match."""
    out = tmp_path / "run"
    proc, summary = run_pretrain(["--config", str(PRESET), f"out_dir={out}", *FAST, "train.steps=24",
                                  "eval.every=12", "checkpoint.every=6", "eval.compile_prompts=2",
                                  "eval.compile_samples=2", "eval.max_new_tokens=32", "tensorboard=true"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    for key in ("checkpoint", "steps", "val_bpb", "tokens_per_byte", "packing_efficiency"):
        assert summary.get(key) is not None, key
    assert summary["steps"] == 24
    assert 0 < summary["tokens_per_byte"] < 1 and summary["packing_efficiency"] >= 0.995
    assert 0.3 < summary["fim_share"] < 0.6  # the configured 50 %, minus FIM draws too long for a window
    assert summary["compile_rate"] is not None and summary["fim_exact_match"] is not None
    # the final model is a plain HF checkpoint with its tokenizer
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(summary["checkpoint"])
    tok = AutoTokenizer.from_pretrained(summary["checkpoint"])
    assert model.config.vocab_size == len(tok) and "<|fim_middle|>" in tok.get_vocab()
    # keep-last-3 step checkpoints, no partial directories
    assert [p.name for p in sorted((out / "checkpoints").iterdir())] == [
        "step-0000012", "step-0000018", "step-0000024"]
    rows = _metrics(out)
    assert [r["step"] for r in rows] == list(range(1, 25))
    first, last = rows[0], rows[-1]
    assert last["train/loss"] < first["train/loss"] - 1.0
    for key in ("train/loss_ema", "perf/tokens_per_s", "perf/mfu", "train/grad_norm", "perf/peak_memory_gib",
                "lr/matrix", "lr/embedding", "lr/unembedding", "lr/norm"):
        assert key in last, key
    assert last["lr/matrix"] < first["lr/matrix"]  # the WSD warmdown reached the last step
    assert "val/bpb" in rows[11] and "eval/compile_rate" in last and last["eval/sandbox_errors"] == 0
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    # a second run skips every data stage
    t0 = time.monotonic()
    proc, _ = run_pretrain(["shards", "--config", str(PRESET), f"out_dir={out}", *FAST])
    assert proc.returncode == 0 and proc.stderr.count("reusing") == 2, proc.stderr[-2000:]
    assert time.monotonic() - t0 < 30


def _final_weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "final" / "model.safetensors"))


def test_resume_after_sigkill_is_bitwise_exact(tiny_data, tmp_path):
    args = ["train", "--config", str(PRESET), *FAST, "train.steps=40", "checkpoint.every=4", "eval.every=20",
            "data.fim_rate=0.5"]
    straight = with_data(tiny_data, tmp_path / "straight")
    proc, summary = run_pretrain([*args, f"out_dir={straight}"])
    assert proc.returncode == 0, proc.stderr[-3000:]

    killed = with_data(tiny_data, tmp_path / "killed")
    cmd = [sys.executable, "-m", "pretrain", *args, f"out_dir={killed}"]
    victim = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (killed / "checkpoints" / "step-0000012").exists():
        assert victim.poll() is None and time.monotonic() < deadline, "run ended before it could be killed"
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert not (killed / "final").exists()
    proc, resumed = run_pretrain([*args, f"out_dir={killed}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert resumed["resumed_from"] and int(Path(resumed["resumed_from"]).name.split("-")[1]) >= 12

    a, b = _final_weights(straight), _final_weights(killed)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    losses = {r["step"]: r["train/loss"] for r in _metrics(straight)}
    after = {r["step"]: r["train/loss"] for r in _metrics(killed)}
    assert all(after[s] == losses[s] for s in range(21, 41))
    assert resumed["val_bpb"] == summary["val_bpb"]


def test_changed_settings_are_refused_at_resume_and_at_data_reuse(tiny_data, tmp_path):
    """A checkpoint and each data stage record the settings they were built under; a rerun in the same out_dir
    with a setting that matters changed stops naming it, instead of continuing the old run as if it were new."""
    out = with_data(tiny_data, tmp_path / "run")
    args = ["train", "--config", str(PRESET), *FAST, "train.steps=4", "checkpoint.every=2", "eval.every=4",
            f"out_dir={out}"]
    proc, _ = run_pretrain(args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc, summary = run_pretrain([*args, "train.steps=6", "data.fim_rate=0.25"])
    assert proc.returncode == 1 and "step-0000004 was trained under other settings" in summary["error"]
    assert "data.fim_rate: 0.5 -> 0.25" in summary["error"] and "train.steps" not in summary["error"]
    assert json.loads((out / "config.json").read_text())["data"]["fim_rate"] == 0.5  # the record is not rewritten
    proc, summary = run_pretrain([*args, "train.steps=6", "data.fim_rate=0.25", "checkpoint.resume=force"])
    assert proc.returncode == 0 and summary["steps"] == 6, proc.stderr[-3000:]
    assert "checkpoint.resume=force: continuing" in proc.stderr
    # the data stages: a tokenizer of another vocabulary is not reused as if it were this one
    proc, summary = run_pretrain(["shards", "--config", str(PRESET), *FAST, "tokenizer.vocab_size=999",
                                  f"out_dir={out}"])
    assert proc.returncode == 1 and "the tokenizer in" in summary["error"], proc.stderr[-2000:]
    assert "tokenizer.vocab_size: 1024 -> 999" in summary["error"]


def _main(args: list[str], capsys) -> tuple[int, dict]:
    """The CLI in-process (bad input fails before any heavy work, so no subprocess is needed)."""
    from pretrain.__main__ import main

    code = main(args)
    return code, json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.mark.parametrize("override, message", [
    ("data.fim_rate=2", "data.fim_rate"),
    ("model.num_kv_heads=3", "num_kv_heads"),
    ("train.stepz=3", "stepz"),
    ("init.lora_rank=8", "init.from_checkpoint"),
    ("train.parallel=deepspeed", "optim.name=adamw"),
    ("data.seq_len=16", "data.seq_len"),
])
def test_bad_config_names_the_field(override, message, tmp_path, capsys):
    code, summary = _main(["--config", str(PRESET), f"out_dir={tmp_path}", override], capsys)
    assert code == 2 and message in summary["error"]


def test_bad_sources_and_checkpoints_are_named(tmp_path, capsys):
    code, summary = _main(["corpus", "--config", str(PRESET), f"out_dir={tmp_path / 'a'}",
                           f"corpus.sources=[{tmp_path / 'nowhere'}]"], capsys)
    assert code == 1 and "nowhere" in summary["error"]
    empty = tmp_path / "empty"
    empty.mkdir()
    code, summary = _main(["corpus", "--config", str(PRESET), f"out_dir={tmp_path / 'b'}",
                           f"corpus.sources=[{empty}]"], capsys)
    assert code == 1 and str(empty) in summary["error"]
    no_tok = tmp_path / "model-without-tokenizer"
    no_tok.mkdir()
    (no_tok / "config.json").write_text("{}")
    code, summary = _main(["tokenizer", "--config", str(PRESET), f"out_dir={tmp_path / 'c'}",
                           f"init.from_checkpoint={no_tok}", "corpus.max_files=5"], capsys)
    assert code == 1 and "tokenizer" in summary["error"]
    code, summary = _main(["train", "--config", str(PRESET), f"out_dir={tmp_path / 'd'}"], capsys)
    assert code == 1 and "shards" in summary["error"]


def test_compile_rate_eval_compiles_for_real():
    """The eval's jobs: the held-out tasks' reference solutions all compile; garbage and a missing brace don't."""
    from configs.base import TaskSplit
    from pretrain.evaluate import compile_eval_tasks, compile_rate

    tasks = [t for t in compile_eval_tasks(32, TaskSplit()) if t.reference][:6]
    assert len(tasks) >= 4
    good = compile_rate(tasks, [[t.reference] for t in tasks], "bwrap")
    assert good["eval/compile_rate"] == 1.0 and good["eval/sandbox_errors"] == 0
    bad = compile_rate(tasks, [["int x = ;\n}\n", "return undefined_name;\n}\n"] for _ in tasks], "bwrap")
    assert bad["eval/compile_rate"] == 0.0 and bad["eval/compile_samples"] == 2 * len(tasks)
