"""Issue 17's GPU bug classes as functions of a device: `tests/gpu/` runs them on CUDA (marker `gpu`), and
`tests/unit/pretrain/test_gpu_bug_classes.py` runs the same functions on the CPU, where each class is visible.

Every case builds a tiny model (vocab 300, hidden 64, 2 layers) and hand-made packed batches: no data files.
"""

from __future__ import annotations

from pathlib import Path

import torch

from pretrain.fim import positions_and_labels
from pretrain.isolation import measure_isolation
from pretrain.loss import token_losses
from pretrain.model import ModelConfig, MoeConfig, build_model, packed_model_inputs

REPO = Path(__file__).resolve().parents[2]
VOCAB = 300
BASE = dict(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16, intermediate_size=96,
            context=256)


def tiny_model(device: str, attn: str | None = None, arch: str = "dense", seed: int = 0):
    torch.manual_seed(seed)
    extra = {"moe": MoeConfig(num_experts=4, experts_per_token=2, expert_intermediate_size=32)} if arch != "dense" \
        else {}
    cfg = ModelConfig(**BASE, arch=arch, attn_implementation=attn, sliding_window=8, **extra)
    model = build_model(cfg, vocab_size=VOCAB, eos_id=0)
    model.config.use_cache = False
    return model.to(device)


def packed_batch(rows: int = 4, length: int = 64, seed: int = 0) -> dict:
    """`rows` windows of `length` tokens, each holding 2-4 documents, with the packer's own position ids and
    labels (`fim.positions_and_labels`: positions restart at each document, no label across a boundary);
    every window starts a document."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (rows, length), generator=g)
    rows_pos, rows_labels = [], []
    for r in range(rows):
        cuts = sorted(torch.randperm(length - 2, generator=g)[: 1 + r % 3].add(1).tolist())
        pos, labels = positions_and_labels(ids[r].tolist(), [0, *cuts])
        rows_pos.append(pos)
        rows_labels.append(labels)
    return {"input_ids": ids, "position_ids": torch.tensor(rows_pos), "labels": torch.tensor(rows_labels)}


def isolation_report(device: str, attn: str, dtype: torch.dtype, leaky: bool = False, arch: str = "dense",
                     length: int = 64):
    """The trainer's probe on a batch of 4 packed windows. `leaky`: position ids run on across documents, so the
    model cannot tell them apart (the failure the probe exists to catch)."""
    model = tiny_model(device, attn, arch).eval()
    batch = packed_batch(length=length)

    def forward(b: dict) -> torch.Tensor:
        pos = b["position_ids"]
        if leaky:
            pos = torch.arange(pos.shape[1]).expand_as(pos).contiguous()
        with torch.autocast(torch.device(device).type, dtype=dtype, enabled=dtype != torch.float32):
            inputs = packed_model_inputs(model, b["input_ids"].to(device), pos.to(device))
            return token_losses(model, model, inputs, b["labels"].to(device))

    return measure_isolation(forward, batch, VOCAB, attn)


def checkpointing_from_checkpoint(device: str, tmp_path) -> dict:
    """Starting from a saved HF checkpoint with activation checkpointing on: the trainer's model must be in
    training mode and recompute each decoder layer in backward (2 forwards per layer per step)."""
    from configs.loader import load_config
    from pretrain.config import PretrainConfig
    from pretrain.train import make_model

    saved = tmp_path / "ckpt"
    tiny_model("cpu").save_pretrained(saved)
    cfg = load_config(PretrainConfig, None, [f"init.from_checkpoint={saved}", "train.activation_checkpointing=true",
                                             "model.context=256", "data.seq_len=64"])
    model = make_model(cfg, tokenizer=None, device=torch.device(device))
    calls = []
    layer = model.model.layers[0]
    forward = layer.forward  # counted on the method: the recompute in backward calls it again

    def counted(*args, **kwargs):
        calls.append(1)
        return forward(*args, **kwargs)

    layer.forward = counted
    batch = packed_batch(rows=2)
    out = model(**packed_model_inputs(model, batch["input_ids"].to(device), batch["position_ids"].to(device)))
    out.logits.float().logsumexp(-1).mean().backward()
    del layer.forward
    return {"training": model.training, "gradient_checkpointing": model.is_gradient_checkpointing,
            "layer_forwards": len(calls)}


def fp32_master_update(device: str, tmp_path, lr: float = 5e-7) -> dict:
    """A GRPO learner step with bf16 compute at the GPU recipe's LR: with fp32 master weights the update lands;
    the same update applied to bf16-stored weights rounds away."""
    from learner.config import RLVRConfig
    from learner.worker import LearnerWorker

    saved = tmp_path / "policy"
    tiny_model("cpu").save_pretrained(saved)
    from rollout.types import TrainingSample

    cfg = RLVRConfig(model={"dtype": "bfloat16"}, algo={"lr": lr, "micro_batch_size": 4, "grad_clip": 1.0},
                     learner={"gpus_per_worker": 1 if device == "cuda" else 0})
    worker = LearnerWorker(cfg, str(saved), rank=0, world_size=1, master_port=0)
    before = {n: p.detach().clone() for n, p in worker.model.named_parameters()}
    g = torch.Generator().manual_seed(0)
    samples = [TrainingSample(prompt_ids=tuple(torch.randint(1, VOCAB, (8,), generator=g).tolist()),
                              completion_ids=tuple(torch.randint(1, VOCAB, (16,), generator=g).tolist()),
                              rollout_logprobs=(-5.0,) * 16, advantage=(-1.0) ** k) for k in range(4)]
    worker.train([samples], [64], [1])
    after = dict(worker.model.named_parameters())
    moved = {n: (after[n].detach() != before[n]).float().mean().item() for n in before}
    name = "model.layers.0.mlp.down_proj.weight"
    w = before[name]
    bf16_after = (w - lr * torch.sign(w)).to(torch.bfloat16)  # AdamW's first step: lr x sign(grad), in bf16
    return {"dtypes": sorted({str(p.dtype) for p in worker.model.parameters()}),
            "matrix_moved": moved[name],  # share of the matrix's fp32 elements the step changed
            "matrices_moved": sum(v > 0 for k, v in moved.items() if "proj" in k),
            "matrices": sum("proj" in k for k in moved),
            "bf16_copy_moved": (bf16_after != w.to(torch.bfloat16)).float().mean().item()}
