"""The README's main job end to end, shortened (configs/pipeline/ci.yaml): scripts/demo.sh runs pretrain -> SFT
-> RLVR as a Ray job on a local head it starts and stops -> held-out evaluation of every stage -> the HTML
report; RLVR must raise the held-out reward; a second run reuses every stage."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def _demo(out: Path, *overrides: str) -> tuple[subprocess.CompletedProcess, dict]:
    env = {**os.environ, "CRUCIBLE_PIPELINE_CONFIG": "configs/pipeline/ci.yaml"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run(["bash", "scripts/demo.sh", f"out_dir={out}", *overrides], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc, json.loads(proc.stdout.strip().splitlines()[-1])


def _ray_heads() -> list[str]:
    return [" ".join(p.info["cmdline"] or []) for p in psutil.process_iter(["cmdline"])
            if "crucible-ray-" in " ".join(p.info["cmdline"] or [])]


def test_the_pipeline_runs_every_stage_then_reuses_them(tmp_path):
    out = tmp_path / "demo"
    heads_before = _ray_heads()
    _, s = _demo(out)

    assert set(s["pass@1"]) == {"pretrain", "sft", "rlvr"}
    assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in s["pass@1"].values()), s["pass@1"]
    # each stage consumed the one before: SFT started from the pretrained checkpoint, RLVR from SFT's
    sft = json.loads((out / "sft" / "stage.json").read_text())
    assert f"model.name_or_path={s['checkpoints']['pretrain']}" in sft["command"]
    rlvr = json.loads((out / "rlvr" / "seed-0" / "stage.json").read_text())
    assert rlvr["command"][1:3] == ["job", "submit"], "RLVR must run as a Ray job"
    assert f"model.path={s['checkpoints']['sft']}" in rlvr["command"]
    r = rlvr["summary"]
    assert r["steps"] == 10 and r["duplicates"] == 0
    # learning: GRPO raises the reward the learner measures on held-out tier-0 prompts (vLLM, fixed seeds,
    # before the first and after the last step). A sign error lowers it; a broken weight sync leaves it equal.
    assert r["eval_reward_last"] - r["eval_reward_first"] >= 0.5, (r["eval_reward_first"], r["eval_reward_last"])
    for name, path in s["checkpoints"].items():
        assert (Path(path) / "config.json").exists() and (Path(path) / "tokenizer.json").exists(), name
    # every checkpoint is scored on the same held-out tasks with the same number of samples
    evals = {n: json.loads((out / "eval" / f"{n}.json").read_text()) for n in ("pretrain", "sft", "rlvr-seed-0")}
    assert {e["tasks"] for e in evals.values()} == {8} and {e["samples"] for e in evals.values()} == {16}
    assert all(e["sandbox_errors"] == 0 for e in evals.values())
    assert sum(1 for _ in open(out / "eval" / "sft.samples.jsonl")) == 16
    # the report: numbers, the learning table and all six plots
    html = Path(s["report"]).read_text()
    assert html.count("data:image/png;base64,") == 6
    assert "Did RLVR improve on SFT?" in html and "Held-out evaluation per stage" in html
    assert set(s["seconds"]) == {"pretrain", "sft", "rlvr", "eval"} and all(v > 0 for v in s["seconds"].values())
    assert _ray_heads() == heads_before, "the local Ray head must be stopped when RLVR ends"

    started = time.monotonic()
    _, again = _demo(out)
    assert time.monotonic() - started < 60
    assert set(again["reused"]) == {"pretrain", "sft", "rlvr/seed-0", "eval/pretrain", "eval/sft", "eval/rlvr/seed-0"}
    assert again["pass@1"] == s["pass@1"] and again["checkpoints"] == s["checkpoints"]


def test_your_own_model_skips_pretraining_and_goes_through_sft_and_rlvr(tmp_path):
    """`pretrain: null` + `model: <HF checkpoint>`: the checkpoint here is one `python -m pretrain` made (the
    tiny preset, shortened); SFT starts from it, RLVR from SFT's, and every checkpoint is evaluated."""
    pre = tmp_path / "pretrain"
    proc = subprocess.run([str(REPO / ".venv" / "bin" / "python"), "-m", "pretrain", "--config", "tiny-cpu",
                           f"out_dir={pre}", "train.steps=30", "eval.every=30", "checkpoint.every=30",
                           "eval.fim_examples=0", "eval.compile_prompts=0"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    model = json.loads(proc.stdout.strip().splitlines()[-1])["checkpoint"]
    out = tmp_path / "own"
    _, s = _demo(out, "pretrain=null", f"model={model}",
                 "sft.overrides=[train.max_steps=10,eval.every=10,checkpoint.every=10]",
                 "rlvr.overrides=[run.steps=2,rollout.prompts_per_step=4,rollout.max_model_len=512]")
    assert set(s["pass@1"]) == {"base", "sft", "rlvr"} and s["checkpoints"]["base"] == model
    assert not (out / "pretrain").exists()
    sft = json.loads((out / "sft" / "stage.json").read_text())
    assert f"model.name_or_path={model}" in sft["command"]
    rlvr = json.loads((out / "rlvr" / "seed-0" / "stage.json").read_text())
    assert f"model.path={s['checkpoints']['sft']}" in rlvr["command"] and rlvr["summary"]["steps"] == 2
    assert {json.loads((out / "eval" / f"{n}.json").read_text())["tasks"] for n in ("base", "sft", "rlvr-seed-0")} == {8}
    assert s["learning"]["start"] == "sft"
    html = Path(s["report"]).read_text()
    assert "Crucible pipeline: your model → SFT → RLVR" in html and "Did RLVR improve on SFT?" in html
    # a model that is neither a directory nor a hub id: one error naming the field, before anything runs
    bad, summary = _demo_fails(tmp_path / "bad", "pretrain=null", "model=/nonexistent/model")
    assert bad.returncode == 1 and "model: /nonexistent/model is neither a directory nor a hub id" in summary["error"]


def _demo_fails(out: Path, *overrides: str) -> tuple[subprocess.CompletedProcess, dict]:
    env = {**os.environ, "CRUCIBLE_PIPELINE_CONFIG": "configs/pipeline/ci.yaml"}
    proc = subprocess.run(["bash", "scripts/demo.sh", f"out_dir={out}", *overrides], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    return proc, json.loads(proc.stdout.strip().splitlines()[-1])
