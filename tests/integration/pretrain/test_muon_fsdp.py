"""Muon + AdamW under FSDP2 (`fully_shard`, DTensor params sharded on dim 0) on 2 gloo ranks must train
exactly like one process: same 3 steps (schedule, grad clipping, all four groups) on the same global batch
(each rank gets half; per-rank mean losses averaged by FSDP = the global mean), then the gathered params must
match within 1e-5. A Muon that orthogonalised each rank's row-shard instead of the whole matrix is off by
~1e-1 here. Two tiny `transformers` models: Llama (2-D matrices split across ranks) and gpt-oss (fused
experts [E, r, c] split by expert, sinks, router, expert biases). The DCP optimizer state dict round trip
(get/set_optimizer_state_dict) is checked on the ranks too, with momentum kept sharded."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import transformers as tf
from torch import nn

from learner.cluster import free_port
from pretrain.optim import OptimConfig, build_optimizer, clip_grad_norm
from pretrain.schedule import lr_multiplier

pytestmark = pytest.mark.slow

WORLD, STEPS, BATCH, SEQ = 2, 3, 4, 16
CFG = OptimConfig(lr_embedding=0.05, lr_unembedding=0.003, lr_scalar=0.01, grad_clip=0.5)
TINY = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=8)
ARCHS = ("llama", "gpt_oss")


def make_model(arch: str) -> nn.Module:
    torch.manual_seed(0)
    if arch == "llama":
        return tf.LlamaForCausalLM(tf.LlamaConfig(**TINY))
    return tf.GptOssForCausalLM(tf.GptOssConfig(**TINY, num_local_experts=4, num_experts_per_tok=2,
                                                layer_types=["sliding_attention", "full_attention"],
                                                sliding_window=8))


def batches() -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    return torch.randint(0, TINY["vocab_size"], (STEPS, BATCH, SEQ), generator=gen)


def train(model: nn.Module, opt: torch.optim.Optimizer, data: torch.Tensor) -> list[float]:
    norms = []
    for step in range(STEPS):
        model(input_ids=data[step], labels=data[step]).loss.backward()
        norms.append(clip_grad_norm(model.parameters(), CFG.grad_clip))
        mult = lr_multiplier(step, STEPS, CFG.schedule, CFG.warmup_frac, CFG.warmdown_frac, CFG.final_frac)
        for group in opt.param_groups:
            group["lr"] = group["base_lr"] * mult
        opt.step()
        opt.zero_grad(set_to_none=True)
    return norms


def check_dcp_round_trip(model: nn.Module, opt: torch.optim.Optimizer) -> None:
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict
    from torch.distributed.tensor import DTensor

    osd = get_optimizer_state_dict(model, opt)
    buf = osd["state"]["model.layers.0.self_attn.q_proj.weight"]["momentum_buffer"]
    assert isinstance(buf, DTensor) and buf.to_local().shape[0] == buf.shape[0] // WORLD
    fresh = build_optimizer(model, CFG)
    set_optimizer_state_dict(model, fresh, osd)  # DCP first runs a zero-lr step to create state: a no-op
    assert [(g["name"], g["base_lr"], g["lr"]) for g in fresh.param_groups] == [
        (g["name"], g["base_lr"], g["lr"]) for g in opt.param_groups]
    for p in model.parameters():
        for key, value in opt.state[p].items():
            loaded = fresh.state[p][key]
            if isinstance(value, DTensor):
                assert isinstance(loaded, DTensor) and loaded.placements == value.placements
                value, loaded = value.to_local(), loaded.to_local()
            assert torch.equal(value, loaded), key


def _worker(rank: int, port: int, out_dir: str) -> None:
    from torch.distributed.fsdp import fully_shard

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        for arch in ARCHS:
            model = make_model(arch)
            for layer in model.model.layers:
                fully_shard(layer)
            fully_shard(model)
            opt = build_optimizer(model, CFG)
            half = BATCH // WORLD
            norms = train(model, opt, batches()[:, rank * half:(rank + 1) * half])
            params = {n: p.full_tensor() for n, p in model.named_parameters()}
            check_dcp_round_trip(model, opt)
            if rank == 0:
                torch.save({"params": params, "norms": norms}, Path(out_dir) / f"{arch}.pt")
    finally:
        dist.destroy_process_group()


def run_fsdp(out_dir: Path, timeout_s: float = 120.0) -> None:
    ctx = mp.spawn(_worker, args=(free_port(), str(out_dir)), nprocs=WORLD, join=False)
    deadline = time.monotonic() + timeout_s
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for proc in ctx.processes:
                proc.kill()
            pytest.fail(f"FSDP workers still running after {timeout_s}s")


def test_muon_fsdp2_matches_single_process(tmp_path: Path) -> None:
    run_fsdp(tmp_path)
    for arch in ARCHS:
        model = make_model(arch)
        reference_norms = train(model, build_optimizer(model, CFG), batches())
        sharded = torch.load(tmp_path / f"{arch}.pt")
        initial = dict(make_model(arch).named_parameters())
        diffs = {}
        for name, p in model.named_parameters():
            assert (p - initial[name]).abs().max() > 1e-4, f"{arch}: {name} did not train"
            diffs[name] = (sharded["params"][name] - p).abs().max().item()
        worst = max(diffs, key=diffs.__getitem__)
        print(f"{arch}: max |FSDP2 - single| = {diffs[worst]:.2e} ({worst})")
        assert diffs[worst] <= 1e-5, f"{arch}: {worst} differs by {diffs[worst]:.2e} (FSDP2 vs one process)"
        assert sharded["norms"] == pytest.approx(reference_norms, rel=1e-5)
        assert sharded["norms"][0] > CFG.grad_clip  # clipping was active
