"""`python -m sft` end to end on the embedded default: data -> scratch base -> packed, prompt-masked SFT ->
compare (sandbox-scored); LoRA resume continues the same loss curve; the merged model loads in vLLM;
DeepSpeed ZeRO-3 on 2 gloo ranks; bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO

pytestmark = pytest.mark.slow
PRESET = REPO / "configs" / "sft" / "tiny-cpu.yaml"
FAST = ["data.max_files=10", "train.max_length=256", "eval.max_samples=16", "logging.tensorboard=true"]


def run_sft(args: list[str], launcher: list[str] | None = None, timeout: float = 600):
    cmd = [*(launcher or [sys.executable]), "-m", "sft", *args, "--config", str(PRESET), *FAST]
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": os.environ.get(
        "TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "torch_extensions"))}
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)
    lines = proc.stdout.strip().splitlines()
    return proc, json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}


def reuse_data(src: Path, dst: Path) -> None:
    """Another run on the same data and base model (built once by `trained`)."""
    dst.mkdir(parents=True)
    shutil.copytree(src / "data", dst / "data")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("sft") / "run"
    proc, summary = run_sft(["train", f"out_dir={out}", "train.max_steps=30", "eval.every=15",
                             "checkpoint.every=10", "checkpoint.keep=2", "logging.every=5"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, summary


def test_tiny_default_trains_a_model_and_lowers_eval_loss(trained):
    out, s = trained
    assert s["checkpoint"] == str(out / "final") and s["steps"] == 30 and s["adapter"] is None
    assert s["eval_loss_last"] < s["eval_loss_first"] - 0.5, s
    assert s["records"]["train"] > 100 and s["data_samples"]["train"] >= s["records"]["train"]
    from transformers import AutoModelForCausalLM, AutoTokenizer

    AutoModelForCausalLM.from_pretrained(s["checkpoint"])
    assert AutoTokenizer.from_pretrained(s["checkpoint"]).chat_template  # saved with the built-in template
    assert sorted(p.name for p in (out / "checkpoints").glob("checkpoint-*")) == ["checkpoint-20", "checkpoint-30"]
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r["eval_loss"] for r in logged if "eval_loss" in r]
    assert evals[0] == pytest.approx(s["eval_loss_first"]) and len(evals) == 3  # on start, at 15 and 30


def test_compare_puts_base_and_tuned_side_by_side_and_scores_both(trained):
    out, _ = trained
    proc, s = run_sft(["compare", f"out_dir={out}", "--limit", "3", "--max-new-tokens", "32"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert s["questions"] == 3
    for name in ("base", "tuned"):
        assert s[f"{name}_tasks"]["tasks"] == 3 and sum(s[f"{name}_tasks"]["verdicts"].values()) == 3
        assert 0.0 <= s[f"{name}_pass_rate"] <= 1.0
    rows = [json.loads(line) for line in (out / "compare" / "compare.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(r["base"] != r["tuned"] for r in rows)
    assert (out / "compare" / "compare.md").read_text().count("\n") == 2 + 3


def _losses(run: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
            if "loss" in r}


def test_lora_resume_continues_the_same_loss_curve_and_merged_model_loads_in_vllm(trained, tmp_path):
    out, first = trained
    lora = ["train.method=lora", "train.lr=1e-2", f"model.name_or_path={first['base']}", "train.max_steps=8",
            "checkpoint.every=4", "checkpoint.keep=3", "logging.every=1", "eval.every=4"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    reuse_data(out, straight)
    proc, a = run_sft(["train", f"out_dir={straight}", *lora])
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the second run starts from the first one's step-4 checkpoint, as if it had been stopped there
    reuse_data(out, resumed)
    shutil.copytree(straight / "checkpoints" / "checkpoint-4", resumed / "checkpoints" / "checkpoint-4")
    shutil.copy(straight / "eval_first.json", resumed / "eval_first.json")
    # the checkpoint records its settings: another learning rate is refused, naming it, before anything runs
    proc, refused = run_sft(["train", f"out_dir={resumed}", *lora, "train.lr=2e-2"])
    assert proc.returncode == 1 and "checkpoint-4 was trained under other settings" in refused["error"]
    assert "train.lr: 0.01 -> 0.02" in refused["error"] and not (resumed / "config.json").exists()
    proc, b = run_sft(["train", f"out_dir={resumed}", *lora])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert b["resumed_from"].endswith("checkpoint-4") and b["steps"] == 8
    la, lb = _losses(straight), _losses(resumed)
    # steps 1-4 come from the checkpoint's history, 5-8 were computed again after the resume
    assert sorted(lb) == sorted(la) == list(range(1, 9))
    assert [lb[k] for k in range(1, 9)] == pytest.approx([la[k] for k in range(1, 9)], abs=1e-5)
    assert la[8] < la[1]
    assert b["eval_loss_first"] == a["eval_loss_first"] and b["eval_loss_last"] == pytest.approx(a["eval_loss_last"])
    from safetensors.torch import load_file

    wa, wb = (load_file(r / "adapter" / "adapter_model.safetensors") for r in (straight, resumed))
    assert wa.keys() == wb.keys() and all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)
    # the merged checkpoint is a plain HF model that vLLM loads, with HF's log-probs
    script = REPO / "tests" / "integration" / "pretrain" / "vllm_generate.py"
    gen = subprocess.run([sys.executable, str(script), b["checkpoint"], "### Instruction:\nWrite add.\n\n"],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert gen.returncode == 0, gen.stderr[-3000:]
    result = json.loads(next(line for line in gen.stdout.splitlines() if line.startswith("RESULT "))[7:])
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(b["checkpoint"]).eval()
    ids = torch.tensor([result["prompt_ids"]])
    with torch.no_grad():
        hf = torch.log_softmax(model(input_ids=ids).logits[0, :-1], -1).gather(1, ids[0, 1:, None])[:, 0]
    assert (hf - torch.tensor(result["prompt_logprobs"][1:])).abs().max() < 1e-3


def test_deepspeed_zero3_lora_on_two_ranks(trained, tmp_path):
    out, first = trained
    run = tmp_path / "zero3"
    reuse_data(out, run)
    proc, s = run_sft(["train", f"out_dir={run}", "parallel=deepspeed_zero3", "train.method=lora",
                       f"model.name_or_path={first['base']}", "train.max_steps=4", "eval.every=2",
                       "checkpoint.every=2"], launcher=[sys.executable, "-m", "torch.distributed.run",
                                                        "--nproc-per-node", "2"])
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert s["world_size"] == 2 and s["steps"] == 4 and s["eval_loss_last"] < s["eval_loss_first"]
    from safetensors.torch import load_file

    adapter = load_file(Path(s["adapter"]) / "adapter_model.safetensors")  # gathered from ZeRO-3 shards
    assert adapter and all(t.numel() > 0 for t in adapter.values())
    merged, base = (load_file(Path(p) / "model.safetensors") for p in (s["checkpoint"], first["base"]))
    changed = {k for k in base if not torch.equal(base[k], merged[k])}
    assert changed and all(k.endswith("proj.weight") for k in changed)  # only LoRA-targeted layers move


def test_bad_input_names_the_file_and_line(trained, tmp_path, capsys):
    from sft.__main__ import main

    out, _ = trained
    run = tmp_path / "bad"
    reuse_data(out, run)
    train_file = run / "data" / "train.chat.jsonl"
    lines = train_file.read_text().splitlines()
    lines[2] = '{"messages": [{"role": "user", "content": "q"}'
    train_file.write_text("\n".join(lines) + "\n")
    cases = [
        (["train", f"out_dir={run}"], 1, "train.chat.jsonl:3: invalid JSON"),
        (["frobnicate"], 2, "unknown command 'frobnicate'"),
        (["compare", f"out_dir={tmp_path / 'untrained'}"], 1, "no model there (train first, or pass --base)"),
        (["train", "train.method=dora"], 2, "train.method"),
    ]
    for args, code, message in cases:
        assert main([*args, "--config", str(PRESET), *FAST]) == code, args
        captured = capsys.readouterr()
        assert message in captured.err and json.loads(captured.out.splitlines()[-1])["error"], (args, captured.err)
