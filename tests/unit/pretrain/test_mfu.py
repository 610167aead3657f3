"""MFU by hand: training FLOPs per token (output head counted once, tied or not; PaLM/torchtitan attention
term), the dense bf16 peak read from exact torch device names, and the utilisation ratio itself."""

from __future__ import annotations

import pytest
import torch

from pretrain.model import (ModelConfig, MoeConfig, build_model, flops_per_token, num_params,
                            training_flops_per_token)
from pretrain.monitor import device_peak_tflops, gpu_peak_tflops, mfu

# --- FLOPs per token ---------------------------------------------------------------------------------------


def test_training_flops_tiny_by_hand():
    # 6 * (1000 active + 10 vocab * 4 hidden) = 6 * 1040 = 6240; attention 12 * 2 L * 2 H * 2 hd * 8 T = 768
    # (PaLM/torchtitan: the full T, not T/2 for the causal mask)
    flops = training_flops_per_token(1000, vocab=10, hidden=4, layers=2, heads=2, head_dim=2, seq_len=8)
    assert flops == 6240 + 768 == 7008


def test_training_flops_llama2_7b_by_hand():
    """Llama-2-7B: 6,738,415,616 params, of which 2 x 32000 x 4096 = 262,144,000 are embedding + head, so
    6,476,271,616 non-embedding; the head (131,072,000) comes back: 6 x 6,607,343,616 = 39,644,061,696.
    Attention at 4096 tokens: 12 x 32 x 32 x 128 x 4096 = 6,442,450,944."""
    flops = training_flops_per_token(6476271616, vocab=32000, hidden=4096, layers=32, heads=32,
                                     head_dim=128, seq_len=4096)
    assert flops == 39644061696 + 6442450944 == 46086512640


# Tiny models: vocab 300, hidden 64, 2 layers, 4 query / 2 KV heads, head_dim 16, MLP 96 (non-embedding params
# 61,824 — see test_model.py), MoE 4 experts (2 per token) of MLP 32 plus one shared.
VOCAB = 300
BASE = dict(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16, intermediate_size=96)


def tiny(**extra):
    torch.manual_seed(0)
    return build_model(ModelConfig(**BASE, **extra), vocab_size=VOCAB, eos_id=0)


@pytest.mark.parametrize("tied", [False, True])
def test_qwen3_flops_count_the_output_head_once_tied_or_not(tied):
    # 6 * (61824 + 300 * 64) = 6 * 81024 = 486144; attention 12 * 2 * 4 * 16 * 32 = 49152
    model = tiny(tie_embeddings=tied)
    assert (model.lm_head.weight is model.get_input_embeddings().weight) == tied
    assert num_params(model)["active_non_embedding"] == 61824
    assert flops_per_token(model, 32) == 486144 + 49152 == 535296


def test_moe_flops_count_routed_experts_per_token_and_the_head():
    """Per layer: attention 12288 + qk-norm 32 + norms 128 + shared expert 3*64*32 = 6144 + router 4*64 = 256
    + 2 of 4 routed experts 2*3*64*32 = 12288 -> 31136; x 2 layers + final norm 64 = 62336 active.
    6 * (62336 + 19200) = 489216, + attention 49152."""
    model = tiny(arch="moe", moe=MoeConfig(num_experts=4, experts_per_token=2, num_groups=2, topk_groups=1,
                                           expert_intermediate_size=32))
    assert num_params(model)["active_non_embedding"] == 62336
    assert flops_per_token(model, 32) == 489216 + 49152 == 538368


# --- peak FLOP/s -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, expected", [
    ("NVIDIA H100 80GB HBM3", (989.4, "H100 SXM")),
    ("NVIDIA H100 PCIe", (756.0, "H100 PCIe")),
    ("NVIDIA H100 NVL", (835.5, "H100 NVL")),
    ("NVIDIA H200", (989.4, "H200 SXM")),
    ("NVIDIA H200 NVL", (835.5, "H200 NVL")),
    ("NVIDIA GH200 480GB", (989.4, "GH200")),
    ("NVIDIA B200", (2250.0, "B200")),
    ("NVIDIA GB200", (2500.0, "GB200")),
    ("NVIDIA L40S", (362.05, "L40S")),
    ("NVIDIA L40", (181.05, "L40")),
    ("NVIDIA L4", (121.0, "L4")),
    ("NVIDIA A100-SXM4-80GB", (312.0, "A100")),
    ("NVIDIA A100 80GB PCIe", (312.0, "A100")),
    ("NVIDIA A10G", (125.0, "A10G")),
    ("NVIDIA A10", (125.0, "A10")),
    ("NVIDIA GeForce RTX 4090", (165.2, "RTX 4090")),
])
def test_gpu_peak_from_exact_device_names(name, expected):
    assert gpu_peak_tflops(name) == expected


@pytest.mark.parametrize("name", ["NVIDIA Tesla T4", "NVIDIA RTX A1000", "NVIDIA GeForce RTX 3090", ""])
def test_unknown_gpu_has_no_peak(name):
    assert gpu_peak_tflops(name) is None


def test_an_unknown_gpu_reads_zero_and_asks_for_the_config(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA Tesla T4")
    assert device_peak_tflops(None) == (0.0, "NVIDIA Tesla T4 (unknown peak: set train.peak_tflops)")


def test_a_known_gpu_reports_its_name_and_reading(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA GB200")
    tflops, source = device_peak_tflops(None)
    assert tflops == 2500.0 and "NVIDIA GB200" in source and "read as GB200" in source
    assert device_peak_tflops(400.0) == (400.0, "config")


# --- MFU ---------------------------------------------------------------------------------------------------


def test_mfu_by_hand():
    # 4e9 FLOPs/token x 100,000 tokens/s = 4e14 FLOP/s on a 1000 TFLOP/s = 1e15 FLOP/s device
    assert mfu(4e9, 100_000, 1000.0) == pytest.approx(0.4)
    # the tiny qwen3 above at 1e6 tokens/s on an H100 SXM: 535296 * 1e6 / 989.4e12
    assert mfu(535296, 1e6, 989.4) == pytest.approx(535296e6 / 989.4e12) == pytest.approx(5.4103e-4, rel=1e-4)


def test_mfu_is_zero_without_a_peak():
    assert mfu(4e9, 100_000, 0.0) == 0.0
