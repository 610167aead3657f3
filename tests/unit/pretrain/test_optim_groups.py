"""Issue 17: the optimizer's parameter groups on the models `pretrain.model.build_model` makes (dense Qwen3,
GLM-4-MoE with `mlp.gate` routers, gpt-oss-style "sinks"), the per-group peak lrs with and without nanochat's
width scaling against hand-computed values, and the presets' batch size and lrs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from configs.loader import load_config
from pretrain.config import PretrainConfig
from pretrain.model import ModelConfig, MoeConfig, build_model
from pretrain.optim import (GROUPS, WIDTH_SCALED_GROUPS, OptimConfig, build_optimizer, classify_params,
                            width_lr_scale)

PRESETS = Path(__file__).resolve().parents[3] / "configs" / "pretrain"
VOCAB, EOS = 300, 0


def tiny(arch: str, hidden: int = 128) -> nn.Module:
    torch.manual_seed(0)
    moe = MoeConfig(num_experts=4, experts_per_token=2, num_shared_experts=1, expert_intermediate_size=16,
                    first_dense_layers=1 if arch == "moe" else 0)
    cfg = ModelConfig(arch=arch, hidden_size=hidden, num_layers=2, num_heads=4, num_kv_heads=2,
                      head_dim=8, intermediate_size=32, context=64, sliding_window=16,
                      moe=None if arch == "dense" else moe)
    return build_model(cfg, VOCAB, EOS)


def names(groups: dict, group: str) -> set[str]:
    return {n for n, _ in groups[group]}


def layer_names(*suffixes: str, layers: tuple[int, ...] = (0, 1)) -> set[str]:
    return {f"model.layers.{i}.{s}" for i in layers for s in suffixes}


# the hand-listed expectations for the three tiny architectures (2 layers each)
QK_NORMS = ("self_attn.q_norm.weight", "self_attn.k_norm.weight")
LAYER_NORMS = ("input_layernorm.weight", "post_attention_layernorm.weight")
EXPECTED = {
    # Qwen3: per-layer input/post-attention RMSNorm + per-head q_norm/k_norm, the final norm; nothing scalar
    "dense": {"norm": layer_names(*LAYER_NORMS, *QK_NORMS) | {"model.norm.weight"}, "scalar": set()},
    # GLM-4-MoE (layer 0 dense, layer 1 MoE): the same norms (use_qk_norm) + layer 1's router mlp.gate
    "moe": {"norm": layer_names(*LAYER_NORMS, *QK_NORMS) | {"model.norm.weight",
                                                            "model.layers.1.mlp.gate.weight"},
            "scalar": set()},
    # gpt-oss: no q/k norms; router weight + bias in every layer; sinks, attention and expert biases: scalars
    "sinks": {"norm": layer_names(*LAYER_NORMS, "mlp.router.weight", "mlp.router.bias")
              | {"model.norm.weight"},
              "scalar": layer_names("self_attn.sinks", "self_attn.q_proj.bias", "self_attn.k_proj.bias",
                                    "self_attn.v_proj.bias", "self_attn.o_proj.bias",
                                    "mlp.experts.gate_up_proj_bias", "mlp.experts.down_proj_bias")},
}


@pytest.mark.parametrize("arch", ["dense", "moe", "sinks"])
def test_every_param_in_exactly_one_group_norms_and_routers_in_norm(arch: str) -> None:
    model = tiny(arch)
    g = classify_params(model)
    assert tuple(g) == GROUPS and "norm" in GROUPS
    placed = [n for grp in g.values() for n, _ in grp]
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert len(placed) == len(set(placed)), "a param is in two groups"
    assert sorted(placed) == sorted(trainable), "every trainable param must be in a group"

    assert names(g, "norm") == EXPECTED[arch]["norm"]
    assert names(g, "scalar") == EXPECTED[arch]["scalar"]
    assert {n for n in trainable if "norm" in n} <= names(g, "norm")  # every *norm* weight
    assert names(g, "embedding") == {"model.embed_tokens.weight"}
    assert names(g, "unembedding") == {"lm_head.weight"}
    # what is left is Muon's: >= 2-D, not a norm, not a router, not a bias
    assert names(g, "matrix") == set(trainable) - EXPECTED[arch]["norm"] - EXPECTED[arch]["scalar"] - {
        "model.embed_tokens.weight", "lm_head.weight"}
    params = dict(model.named_parameters())
    assert all(params[n].ndim >= 2 and "norm" not in n and "router" not in n and ".gate." not in n
               for n in names(g, "matrix"))
    if arch == "moe":
        assert params["model.layers.1.mlp.gate.weight"].shape == (4, 128)  # the router is 2-D but not Muon's
        assert {"model.layers.0.mlp.gate_proj.weight", "model.layers.1.mlp.shared_experts.gate_proj.weight",
                "model.layers.1.mlp.experts.gate_up_proj"} <= names(g, "matrix")  # gate_proj is not a router


def test_norm_by_class_name_or_name_and_scalars_stay_scalar() -> None:
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.ln = nn.LayerNorm(8)                   # class name ends with LayerNorm
            self.rms = nn.RMSNorm(8)                    # ... RMSNorm
            self.my_norm = nn.Linear(8, 8, bias=False)  # named *norm*
            self.proj = nn.Linear(8, 8)
            self.lam = nn.Parameter(torch.ones(()))     # a residual scalar (nanochat's kind)

    g = classify_params(nn.Sequential(nn.Embedding(10, 8), Block()))
    assert names(g, "norm") == {"1.ln.weight", "1.ln.bias", "1.rms.weight", "1.my_norm.weight"}
    assert names(g, "scalar") == {"1.proj.bias", "1.lam"} and names(g, "matrix") == {"1.proj.weight"}


# --- lrs ---------------------------------------------------------------------------------------------------

LRS = dict(lr_matrix=0.015, lr_embedding=0.2, lr_unembedding=0.003, lr_norm=3e-3, lr_scalar=0.4)
# by hand: (128/768)^-0.5 = sqrt(6) = 2.449489742783178; (2560/768)^-0.5 = sqrt(0.3) = 0.5477225575051661
HAND = {
    (128, False): {"matrix": 0.015, "embedding": 0.2, "unembedding": 0.003, "norm": 0.003, "scalar": 0.4},
    (2560, False): {"matrix": 0.015, "embedding": 0.2, "unembedding": 0.003, "norm": 0.003, "scalar": 0.4},
    (128, True): {"matrix": 0.015, "embedding": 0.4898979485566356, "unembedding": 0.007348469228349534,
                  "norm": 0.007348469228349534, "scalar": 0.9797958971132712},
    (2560, True): {"matrix": 0.015, "embedding": 0.10954451150103323, "unembedding": 0.0016431676725154982,
                   "norm": 0.0016431676725154982, "scalar": 0.21908902300206645},
}


@pytest.mark.parametrize("scaling", [False, True])
@pytest.mark.parametrize("hidden", [128, 2560])
def test_group_base_lrs_match_hand_values(hidden: int, scaling: bool) -> None:
    model = tiny("sinks", hidden)  # has all five groups
    assert model.config.hidden_size == hidden  # build_optimizer reads the width from here
    opt = build_optimizer(model, OptimConfig(**LRS, adamw_width_scaling=scaling))
    by = {g["name"]: g for g in opt.param_groups}
    assert list(by) == list(GROUPS)
    assert {n: g["base_lr"] for n, g in by.items()} == pytest.approx(HAND[hidden, scaling], rel=1e-12)
    assert all(g["lr"] == g["base_lr"] for g in by.values())
    assert {n: g["weight_decay"] for n, g in by.items()} == {
        "matrix": 0.1, "embedding": 0.0, "unembedding": 0.0, "norm": 0.0, "scalar": 0.0}
    assert by["norm"]["kind"] == by["scalar"]["kind"] == "adamw" and by["matrix"]["kind"] == "muon"
    # the trainer's contract: lr = base_lr * schedule multiplier, logged as lr/{name}
    for g in opt.param_groups:
        g["lr"] = g["base_lr"] * 0.5
    logged = {f"lr/{g['name']}": g["lr"] for g in opt.param_groups}
    assert logged == pytest.approx({f"lr/{n}": 0.5 * v for n, v in HAND[hidden, scaling].items()}, rel=1e-12)


def test_width_scale_formula_and_which_groups() -> None:
    assert width_lr_scale(768) == 1.0
    assert width_lr_scale(2560) == pytest.approx(0.3 ** 0.5, rel=1e-15)
    assert width_lr_scale(128) == pytest.approx(6 ** 0.5, rel=1e-15)
    assert set(WIDTH_SCALED_GROUPS) == set(GROUPS) - {"matrix"}
    with pytest.raises(ValueError, match="hidden_size"):
        width_lr_scale(0)


def test_adamw_matrices_are_not_width_scaled() -> None:
    opt = build_optimizer(tiny("dense", 2560), OptimConfig(name="adamw", lr_adamw=1e-3, lr_norm=2e-3,
                                                           adamw_width_scaling=True))
    by = {g["name"]: g["base_lr"] for g in opt.param_groups}
    assert by["matrix"] == 1e-3 and by["norm"] == pytest.approx(2e-3 * 0.3 ** 0.5, rel=1e-12)


def test_width_scaling_needs_a_width() -> None:
    model = nn.Sequential(nn.Embedding(10, 8), nn.Linear(8, 8), nn.LayerNorm(8))
    assert build_optimizer(model, OptimConfig()).param_groups  # no scaling: no width needed
    with pytest.raises(ValueError, match="hidden_size"):
        build_optimizer(model, OptimConfig(adamw_width_scaling=True))
    by = {g["name"]: g["base_lr"] for g in build_optimizer(model, OptimConfig(adamw_width_scaling=True),
                                                           hidden_size=3072).param_groups}
    # (3072/768)^-0.5 = 1/2 on every AdamW group (the Linear's bias is a scalar), not on Muon's
    assert by == pytest.approx({"matrix": 0.015, "embedding": 0.1, "norm": 0.0015, "scalar": 0.2})


def test_width_is_read_through_peft() -> None:
    peft = pytest.importorskip("peft")
    model = peft.get_peft_model(tiny("dense", 256), peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    opt = build_optimizer(model, OptimConfig(name="adamw", adamw_width_scaling=True))
    assert [g["name"] for g in opt.param_groups] == ["matrix"]  # only the adapters train; norms are frozen


# --- presets -----------------------------------------------------------------------------------------------

def preset(name: str) -> PretrainConfig:
    return load_config(PretrainConfig, PRESETS / f"{name}.yaml", [])


def test_dense_3b_takes_2_21_tokens_per_step_on_8_gpus() -> None:
    d = preset("dense-3b").data
    assert d.seq_len * d.micro_batch_size * d.grad_accum * 8 == 2 ** 21 == 2_097_152
    assert (d.seq_len, d.micro_batch_size, d.grad_accum) == (8192, 2, 16)


@pytest.mark.parametrize("name", sorted(p.stem for p in PRESETS.glob("*.yaml") if not p.stem.startswith("tiny")))
def test_gpu_presets_train_norms_at_a_conservative_lr(name: str) -> None:
    cfg = preset(name)
    assert cfg.optim.lr_norm <= 3e-3 < cfg.optim.lr_scalar
    assert cfg.optim.adamw_width_scaling is name.startswith(("dense-", "long-context-"))


@pytest.mark.parametrize("name", ["tiny-cpu", "tiny-moe-cpu"])
def test_tiny_presets_keep_the_measured_norm_lr(name: str) -> None:
    """The 2-layer CPU models keep norms (and routers) at the scalar lr their published numbers were measured with."""
    cfg = preset(name)
    assert cfg.optim.lr_norm == cfg.optim.lr_scalar == 0.4
    assert cfg.optim.adamw_width_scaling is False


def test_dense_3b_effective_lrs() -> None:
    cfg = preset("dense-3b")
    assert cfg.model.hidden_size == 2560
    model = tiny("sinks", cfg.model.hidden_size)  # a 2-layer stand-in of the 3B's width, with every group
    by = {g["name"]: g["base_lr"] for g in build_optimizer(model, cfg.optim).param_groups}
    assert by == pytest.approx(HAND[2560, True], rel=1e-12)
    assert 1e-3 <= by["norm"] <= 3e-3  # the Llama/OLMo range for norm gains
