"""Muon + AdamW optimizer (pretrain.optim) on one process: Newton–Schulz, parameter classification on tiny
real `transformers` architectures (dense, MLA + MoE with a router, gpt-oss with sinks and fused experts),
agreement with torch.optim.AdamW / torch.optim.Muon / a hand-written reference, state_dict round trip,
config validation and grad clipping. The FSDP2 (DTensor) path is in tests/integration/pretrain."""

from __future__ import annotations

import copy

import pytest
import torch
import transformers as tf
from pydantic import ValidationError
from torch import nn

from pretrain.optim import (
    GROUPS,
    NS_COEFFICIENTS,
    MuonAdamW,
    OptimConfig,
    build_optimizer,
    classify_params,
    clip_grad_norm,
    zeropower_via_newtonschulz,
)

TINY = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=8)
MOE = dict(moe_intermediate_size=16, n_routed_experts=4, num_experts_per_tok=2, n_shared_experts=1,
           first_k_dense_replace=1, n_group=1, topk_group=1)


def tiny_model(arch: str, tie: bool = False) -> nn.Module:
    torch.manual_seed(0)
    if arch == "llama":
        return tf.LlamaForCausalLM(tf.LlamaConfig(**TINY, tie_word_embeddings=tie))
    if arch == "qwen3":
        return tf.Qwen3ForCausalLM(tf.Qwen3Config(**TINY, tie_word_embeddings=tie))
    if arch == "deepseek_v3":
        return tf.DeepseekV3ForCausalLM(tf.DeepseekV3Config(
            **TINY, **MOE, kv_lora_rank=16, q_lora_rank=16, qk_rope_head_dim=8, qk_nope_head_dim=8,
            v_head_dim=8))
    if arch == "glm4_moe":
        return tf.Glm4MoeForCausalLM(tf.Glm4MoeConfig(**TINY, **MOE))
    if arch == "gpt_oss":
        return tf.GptOssForCausalLM(tf.GptOssConfig(**TINY, num_local_experts=4, num_experts_per_tok=2,
                                                    layer_types=["sliding_attention", "full_attention"],
                                                    sliding_window=8))
    raise AssertionError(arch)


def names(groups: dict, group: str) -> set[str]:
    return {n for n, _ in groups[group]}


# --- Newton–Schulz -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(64, 32), (32, 64), (4, 48, 16), (2, 3, 16, 40)])
def test_newton_schulz_singular_values_near_one(shape: tuple[int, ...]) -> None:
    # The quintic deliberately does not converge to exactly 1: singular values land in ~[0.68, 1.14] for
    # well-conditioned input (Keller Jordan 2024). Rectangular Gaussians are well-conditioned; a square one
    # has near-zero singular values that 5 steps cannot lift, which is by design.
    torch.manual_seed(1)
    g = torch.randn(shape) * 3.0
    out = zeropower_via_newtonschulz(g)
    assert out.shape == g.shape and out.dtype == torch.float32
    s = torch.linalg.svdvals(out)
    assert s.min() > 0.5 and s.max() < 1.5, (s.min(), s.max())
    assert torch.linalg.svdvals(g).max() > 10  # the input was not already orthogonal-ish


def test_newton_schulz_batch_and_transpose_consistent() -> None:
    torch.manual_seed(2)
    g = torch.randn(3, 16, 40)
    batched = zeropower_via_newtonschulz(g)
    assert torch.allclose(batched, torch.stack([zeropower_via_newtonschulz(x) for x in g]), atol=1e-6)
    assert torch.allclose(zeropower_via_newtonschulz(g.mT), batched.mT, atol=1e-6)
    with pytest.raises(ValueError, match="matrix"):
        zeropower_via_newtonschulz(torch.randn(5))


# --- classification ----------------------------------------------------------------------------------------

def check_partition(model: nn.Module, groups: dict) -> None:
    assert set(groups) == set(GROUPS)
    placed = [id(p) for g in groups.values() for _, p in g]
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert len(placed) == len(set(placed)) and set(placed) == trainable
    for _, p in groups["matrix"]:
        assert p.ndim >= 2


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_classify_dense_untied(arch: str) -> None:
    model = tiny_model(arch)
    g = classify_params(model)
    check_partition(model, g)
    assert names(g, "embedding") == {"model.embed_tokens.weight"}
    assert names(g, "unembedding") == {"lm_head.weight"}
    assert names(g, "matrix") == {f"model.layers.{i}.{m}.weight" for i in range(2) for m in (
        "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")}
    norms = {f"model.layers.{i}.{m}.weight" for i in range(2) for m in (
        "input_layernorm", "post_attention_layernorm")} | {"model.norm.weight"}
    if arch == "qwen3":  # Qwen3 also has per-head q_norm / k_norm
        norms |= {f"model.layers.{i}.self_attn.{m}.weight" for i in range(2) for m in ("q_norm", "k_norm")}
    assert names(g, "norm") == norms
    assert not g["scalar"]  # no biases, sinks or other scalars in these architectures


def test_classify_tied_embedding_appears_once() -> None:
    model = tiny_model("qwen3", tie=True)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    g = classify_params(model)
    check_partition(model, g)
    assert names(g, "embedding") == {"model.embed_tokens.weight"} and not g["unembedding"]


@pytest.mark.parametrize("arch", ["deepseek_v3", "glm4_moe"])
def test_classify_moe_with_router(arch: str) -> None:
    model = tiny_model(arch)
    g = classify_params(model)
    check_partition(model, g)
    router = "model.layers.1.mlp.gate.weight"
    assert router in names(g, "norm") and dict(model.named_parameters())[router].shape == (4, 32)
    assert "model.layers.1.mlp.gate.e_score_correction_bias" in dict(model.named_buffers())
    experts = {"model.layers.1.mlp.experts.gate_up_proj", "model.layers.1.mlp.experts.down_proj"}
    assert experts <= names(g, "matrix")
    assert all(dict(model.named_parameters())[n].ndim == 3 for n in experts)
    assert {"model.layers.0.mlp.gate_proj.weight", "model.layers.1.mlp.shared_experts.gate_proj.weight",
            "model.layers.1.self_attn.o_proj.weight"} <= names(g, "matrix")
    if arch == "deepseek_v3":  # MLA low-rank projections are matrices; their norms are norms
        mla = {"model.layers.0.self_attn.q_a_proj.weight", "model.layers.0.self_attn.kv_b_proj.weight"}
        assert mla <= names(g, "matrix")
        assert {"model.layers.0.self_attn.kv_a_layernorm.weight",
                "model.layers.0.self_attn.q_a_layernorm.weight"} <= names(g, "norm")
    assert all(p.ndim == 1 for n, p in g["norm"] if n != router)  # layer 0 is dense: one router
    assert not g["scalar"]


def test_classify_gpt_oss_sinks_router_expert_biases() -> None:
    model = tiny_model("gpt_oss")
    g = classify_params(model)
    check_partition(model, g)
    scalar = names(g, "scalar")
    for i in (0, 1):
        pre = f"model.layers.{i}."
        assert {pre + "self_attn.sinks", pre + "mlp.experts.gate_up_proj_bias",
                pre + "mlp.experts.down_proj_bias", pre + "self_attn.q_proj.bias"} <= scalar
        assert {pre + "mlp.router.weight", pre + "mlp.router.bias", pre + "input_layernorm.weight",
                pre + "post_attention_layernorm.weight"} <= names(g, "norm")
        assert {pre + "mlp.experts.gate_up_proj", pre + "mlp.experts.down_proj",
                pre + "self_attn.q_proj.weight"} <= names(g, "matrix")


def test_classify_plain_module_without_hf_helpers() -> None:
    model = nn.Sequential(nn.Embedding(10, 8), nn.Linear(8, 8), nn.LayerNorm(8), nn.Linear(8, 1))
    g = classify_params(model)
    check_partition(model, g)
    assert names(g, "embedding") == {"0.weight"} and names(g, "matrix") == {"1.weight"}
    assert names(g, "norm") == {"2.weight", "2.bias"}  # nn.LayerNorm by class name
    assert names(g, "scalar") == {"1.bias", "3.weight", "3.bias"}  # [1, 8]: a degenerate matrix goes to AdamW


# --- groups and lrs ----------------------------------------------------------------------------------------

def test_groups_carry_name_base_lr_and_kind() -> None:
    cfg = OptimConfig(lr_matrix=0.02, lr_embedding=0.3, lr_unembedding=0.004, lr_norm=2e-3, lr_scalar=0.5,
                      weight_decay=0.05)
    opt = build_optimizer(tiny_model("gpt_oss"), cfg)
    by = {g["name"]: g for g in opt.param_groups}
    assert list(by) == list(GROUPS)
    assert {n: (g["kind"], g["base_lr"], g["lr"], g["weight_decay"]) for n, g in by.items()} == {
        "matrix": ("muon", 0.02, 0.02, 0.05), "embedding": ("adamw", 0.3, 0.3, 0.0),
        "unembedding": ("adamw", 0.004, 0.004, 0.0), "norm": ("adamw", 2e-3, 2e-3, 0.0),
        "scalar": ("adamw", 0.5, 0.5, 0.0)}
    assert by["matrix"]["momentum"] == 0.95 and by["matrix"]["ns_steps"] == 5 and by["matrix"]["nesterov"]
    assert by["scalar"]["betas"] == (0.9, 0.95) and by["scalar"]["eps"] == 1e-8
    assert by["norm"]["betas"] == (0.9, 0.95) and by["norm"]["eps"] == 1e-8

    llama = build_optimizer(tiny_model("llama"), cfg)
    # Llama has no biases, sinks or other scalars: the empty "scalar" group is left out
    assert [g["name"] for g in llama.param_groups] == ["matrix", "embedding", "unembedding", "norm"]

    adamw = build_optimizer(tiny_model("qwen3", tie=True), OptimConfig(name="adamw", lr_adamw=1e-3))
    by = {g["name"]: g for g in adamw.param_groups}
    assert list(by) == ["matrix", "embedding", "norm"]  # tied: no unembedding group; Qwen3: no scalars
    assert all(g["kind"] == "adamw" for g in by.values()) and by["matrix"]["base_lr"] == 1e-3


def test_training_steps_reduce_loss() -> None:
    model = tiny_model("qwen3")
    opt = build_optimizer(model, OptimConfig(lr_embedding=0.05, lr_scalar=0.01))
    ids = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(0))
    losses = []
    for _ in range(6):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        clip_grad_norm(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5, losses


# --- agreement with references -----------------------------------------------------------------------------

def params_and_grads(shapes: list[tuple[int, ...]], steps: int, seed: int = 0) -> tuple[list, list]:
    gen = torch.Generator().manual_seed(seed)
    params = [torch.randn(s, generator=gen) for s in shapes]
    grads = [[torch.randn(s, generator=gen) for s in shapes] for _ in range(steps)]
    return params, grads


def run(opt: torch.optim.Optimizer, params: list[nn.Parameter], grads: list[list[torch.Tensor]]) -> None:
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = g.clone()
        opt.step()


def adamw_group(params: list, **kw) -> dict:
    return {"params": params, "kind": "adamw", "lr": 1e-2, "weight_decay": 0.1, "betas": (0.9, 0.95),
            "eps": 1e-8, **kw}


def muon_group(params: list, **kw) -> dict:
    return {"params": params, "kind": "muon", "lr": 0.02, "weight_decay": 0.1, "momentum": 0.95,
            "nesterov": True, "ns_steps": 5, **kw}


def test_adamw_groups_match_torch_adamw() -> None:
    init, grads = params_and_grads([(8, 4), (4,), (3, 2, 5)], steps=3)
    mine = [nn.Parameter(t.clone()) for t in init]
    ref = [nn.Parameter(t.clone()) for t in init]
    run(MuonAdamW([adamw_group(mine[:2]), adamw_group(mine[2:], lr=3e-3, weight_decay=0.0)]), mine, grads)
    torch_opt = torch.optim.AdamW([{"params": ref[:2]}, {"params": ref[2:], "lr": 3e-3, "weight_decay": 0.0}],
                                  lr=1e-2, weight_decay=0.1, betas=(0.9, 0.95), eps=1e-8, foreach=False)
    run(torch_opt, ref, grads)
    for a, b in zip(mine, ref):
        torch.testing.assert_close(a, b, atol=1e-7, rtol=0)


@pytest.mark.parametrize("steps", [1, 2])
@pytest.mark.parametrize("nesterov", [True, False])
def test_muon_matches_torch_muon(steps: int, nesterov: bool) -> None:
    # torch.optim.Muon (2.13) runs Newton–Schulz in bf16 with the same ops and uses the same shape factor
    # sqrt(max(1, rows/cols)) (adjust_lr_fn=None = "original") and decoupled decay p *= 1 - lr*wd.
    init, grads = params_and_grads([(16, 8), (8, 24), (12, 12)], steps=steps)
    mine = [nn.Parameter(t.clone()) for t in init]
    ref = [nn.Parameter(t.clone()) for t in init]
    run(MuonAdamW([muon_group(mine, nesterov=nesterov)], ns_dtype=torch.bfloat16), mine, grads)
    run(torch.optim.Muon(ref, lr=0.02, weight_decay=0.1, momentum=0.95, nesterov=nesterov, ns_steps=5,
                         ns_coefficients=NS_COEFFICIENTS), ref, grads)
    for a, b in zip(mine, ref):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def reference_muon_fp32(params: list[torch.Tensor], grads: list[list[torch.Tensor]], lr: float, wd: float,
                        mom: float) -> list[torch.Tensor]:
    """Keller Jordan's Muon written out: EMA momentum, Nesterov, NS5 in fp32, sqrt(max(1, r/c)) factor."""
    a, b, c = NS_COEFFICIENTS
    params = [p.clone() for p in params]
    bufs = [torch.zeros_like(p) for p in params]
    for step_grads in grads:
        for p, buf, g in zip(params, bufs, step_grads):
            buf.mul_(mom).add_(g, alpha=1 - mom)
            x = g * (1 - mom) + buf * mom
            for i in range(x.shape[0]) if x.ndim == 3 else [None]:
                m = x[i] if i is not None else x
                t = m.T if m.shape[0] > m.shape[1] else m
                t = t / t.norm()
                for _ in range(5):
                    gram = t @ t.T
                    t = a * t + (b * gram + c * gram @ gram) @ t
                o = t.T if m.shape[0] > m.shape[1] else t
                scale = max(1, m.shape[0] / m.shape[1]) ** 0.5
                p_i = p[i] if i is not None else p
                p_i.mul_(1 - lr * wd).sub_(lr * scale * o)
    return params


@pytest.mark.parametrize("steps", [1, 2])
def test_muon_fp32_matches_hand_reference_including_expert_batches(steps: int) -> None:
    init, grads = params_and_grads([(16, 8), (8, 24), (4, 24, 8)], steps=steps, seed=3)
    mine = [nn.Parameter(t.clone()) for t in init]
    run(MuonAdamW([muon_group(mine, lr=0.03, weight_decay=0.05, momentum=0.9)]), mine, grads)
    for a, b in zip(mine, reference_muon_fp32(init, grads, lr=0.03, wd=0.05, mom=0.9)):
        torch.testing.assert_close(a.detach(), b, atol=1e-6, rtol=0)


def test_params_without_grad_are_skipped() -> None:
    p, q = nn.Parameter(torch.randn(4, 4)), nn.Parameter(torch.randn(4))
    before = (p.detach().clone(), q.detach().clone())
    opt = MuonAdamW([muon_group([p]), adamw_group([q])])
    opt.step()
    assert torch.equal(p, before[0]) and torch.equal(q, before[1]) and not opt.state


def test_state_dict_round_trip_gives_identical_steps() -> None:
    model = tiny_model("gpt_oss")
    cfg = OptimConfig(lr_embedding=0.05, lr_scalar=0.01)
    opt = build_optimizer(model, cfg)
    ids = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(0))

    def step(m: nn.Module, o: torch.optim.Optimizer) -> None:
        m(input_ids=ids, labels=ids).loss.backward()
        o.step()
        o.zero_grad(set_to_none=True)

    for _ in range(2):
        step(model, opt)
    saved_model, saved_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    assert {g["name"] for g in saved_opt["param_groups"]} == set(GROUPS)

    clone = tiny_model("gpt_oss")
    clone.load_state_dict(saved_model)
    clone_opt = build_optimizer(clone, cfg)
    clone_opt.load_state_dict(saved_opt)
    for _ in range(2):
        step(model, opt)
        step(clone, clone_opt)
    for (n, a), b in zip(model.named_parameters(), clone.parameters()):
        assert torch.equal(a, b), n


def test_muon_adamw_rejects_bad_groups() -> None:
    with pytest.raises(ValueError, match="kind"):
        MuonAdamW([{"params": [nn.Parameter(torch.ones(2, 2))], "kind": "sgd", "lr": 1.0, "weight_decay": 0}])
    with pytest.raises(ValueError, match="momentum"):
        MuonAdamW([{"params": [nn.Parameter(torch.ones(2, 2))], "kind": "muon", "lr": 1.0,
                    "weight_decay": 0}])
    with pytest.raises(ValueError, match=">= 2-D"):
        MuonAdamW([muon_group([nn.Parameter(torch.ones(3))])])


# --- config and clipping -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("field", "value"), [
    ("name", "sgd"), ("lr_matrix", 0.0), ("lr_embedding", -1.0), ("lr_unembedding", 0), ("lr_scalar", -0.1),
    ("lr_norm", 0.0), ("adamw_width_scaling", "sometimes"),
    ("lr_adamw", 0.0), ("weight_decay", -0.1), ("betas", (0.9, 1.0)), ("betas", (-0.1, 0.9)), ("eps", 0.0),
    ("momentum", 1.0), ("ns_steps", 0), ("schedule", "linear"), ("warmup_frac", 1.5), ("warmdown_frac", -0.1),
    ("final_frac", 2.0), ("grad_clip", -1.0), ("unknown_field", 1),
])
def test_config_rejects_bad_values(field: str, value: object) -> None:
    with pytest.raises(ValidationError, match=field):
        OptimConfig(**{field: value})


def test_config_windows_must_fit_for_wsd() -> None:
    with pytest.raises(ValidationError, match="warmup_frac \\+ warmdown_frac"):
        OptimConfig(warmup_frac=0.8, warmdown_frac=0.3)
    assert OptimConfig(warmup_frac=0.8, warmdown_frac=0.3, schedule="cosine").schedule == "cosine"
    assert OptimConfig().model_dump()["betas"] == (0.9, 0.95)


def test_clip_grad_norm() -> None:
    ps = [nn.Parameter(torch.zeros(3)), nn.Parameter(torch.zeros(2, 2)), nn.Parameter(torch.zeros(1))]
    ps[0].grad, ps[1].grad = torch.tensor([3.0, 0.0, 0.0]), torch.tensor([[0.0, 4.0], [0.0, 0.0]])
    assert clip_grad_norm(ps, 0.0) == pytest.approx(5.0)  # 0 = measure only
    assert ps[0].grad[0] == 3.0
    assert clip_grad_norm(ps, 1.0) == pytest.approx(5.0)  # returns the pre-clip norm
    assert clip_grad_norm(ps, 0.0) == pytest.approx(1.0, rel=1e-5)
    assert clip_grad_norm([ps[2]], 1.0) == 0.0  # no grads at all
    with pytest.raises(ValueError, match="max_norm"):
        clip_grad_norm(ps, -1.0)
