"""Tiny models of every architecture: packed-document isolation, YaRN in the saved config, parameter and FLOP
counts by hand, and the auxiliary-loss-free MoE balancer.

All models: vocab 300, hidden 64, 2 layers, 4 query heads, 2 KV heads, head_dim 16, MLP 96; MoE 4 experts in
2 groups (one group per token), 2 experts per token, expert MLP 32. Built on CPU in float32 (SDPA; eager for
the gpt-oss sinks).
"""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError

from pretrain.model import (ModelConfig, MoeBalancer, MoeConfig, YarnConfig, build_model, flops_per_token,
                            hf_config, load_pretrained, num_params, packed_attention_masks)

VOCAB, HIDDEN, LAYERS, HEADS, KV, HEAD_DIM, MLP = 300, 64, 2, 4, 2, 16, 96
EXPERTS, TOP_K, EXPERT_MLP = 4, 2, 32
BASE = dict(hidden_size=HIDDEN, num_layers=LAYERS, num_heads=HEADS, num_kv_heads=KV, head_dim=HEAD_DIM,
            intermediate_size=MLP)
MOE = MoeConfig(num_experts=EXPERTS, experts_per_token=TOP_K, num_groups=2, topk_groups=1,
                expert_intermediate_size=EXPERT_MLP)
ARCHS = {
    "qwen3": dict(arch="dense", family="qwen3"),
    "llama": dict(arch="dense", family="llama"),
    "moe": dict(arch="moe", moe=MOE),
    "sinks": dict(arch="sinks", moe=MOE, sliding_window=4),
}


def tiny(name: str, seed: int = 0, **extra):
    torch.manual_seed(seed)
    return build_model(ModelConfig(**BASE, **ARCHS[name], **extra), vocab_size=VOCAB, eos_id=0)


# --- packed attention --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["qwen3", "llama", "moe", "sinks"])
def test_a_packed_document_sees_only_itself(name):
    """gpt-oss (sinks) needs the explicit masks of `packed_attention_masks`: its HF code ignores position ids
    when building masks; the others derive the document mask themselves (and get None)."""
    model = tiny(name).eval()
    gen = torch.Generator().manual_seed(1)
    a, b = torch.randint(5, VOCAB, (1, 7), generator=gen), torch.randint(5, VOCAB, (1, 9), generator=gen)
    positions = torch.cat([torch.arange(7), torch.arange(9)])[None]
    masks = packed_attention_masks(model, positions)
    assert (masks is not None) == (name == "sinks")
    extra = {} if masks is None else {"attention_mask": masks}
    with torch.no_grad():
        alone = model(input_ids=b, position_ids=torch.arange(9)[None]).logits
        packed = model(input_ids=torch.cat([a, b], 1), position_ids=positions, **extra).logits[:, 7:]
    torch.testing.assert_close(packed, alone, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", list(ARCHS))
def test_without_restarting_positions_the_documents_do_mix(name):
    """The isolation test can fail: one running position sequence makes B attend to A."""
    model = tiny(name).eval()
    gen = torch.Generator().manual_seed(1)
    a, b = torch.randint(5, VOCAB, (1, 7), generator=gen), torch.randint(5, VOCAB, (1, 9), generator=gen)
    with torch.no_grad():
        alone = model(input_ids=b, position_ids=torch.arange(9)[None]).logits
        joined = model(input_ids=torch.cat([a, b], 1), position_ids=torch.arange(16)[None]).logits[:, 7:]
    assert (joined - alone).abs().max() > 1e-3


# --- YaRN --------------------------------------------------------------------------------------------------

YARN = dict(context=1024, yarn=YarnConfig(factor=4, original_max_position_embeddings=256))


def test_yarn_is_written_into_rope_parameters():
    config = hf_config(ModelConfig(**BASE, **YARN), vocab_size=VOCAB, eos_id=0)
    assert config.rope_parameters == {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                                      "original_max_position_embeddings": 256}
    assert config.max_position_embeddings == 1024


def test_without_yarn_rope_is_default():
    config = hf_config(ModelConfig(**BASE), vocab_size=VOCAB, eos_id=0)
    assert config.rope_parameters == {"rope_type": "default", "rope_theta": 10000.0}
    assert config.max_position_embeddings == 512


def test_yarn_model_round_trips_through_save_pretrained(tmp_path):
    from transformers import AutoModelForCausalLM

    model = build_model(ModelConfig(**BASE, **YARN), vocab_size=VOCAB, eos_id=0)
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert type(loaded) is type(model)
    assert loaded.config.rope_parameters == model.config.rope_parameters
    assert loaded.config.max_position_embeddings == 1024
    # the loader applies it: YaRN's attention temperature is 0.1 ln(factor) + 1
    assert loaded.model.rotary_emb.attention_scaling == pytest.approx(0.1 * math.log(4) + 1)
    assert torch.equal(loaded.model.rotary_emb.inv_freq, model.model.rotary_emb.inv_freq)


def test_load_pretrained_extends_a_plain_checkpoint_with_yarn(tmp_path):
    build_model(ModelConfig(**BASE), vocab_size=VOCAB, eos_id=0).save_pretrained(tmp_path)
    model = load_pretrained(str(tmp_path), long_context=ModelConfig(**BASE, **YARN))
    assert model.config.rope_parameters == {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                                            "original_max_position_embeddings": 256}
    assert model.config.max_position_embeddings == 1024


# --- parameter and FLOP counts -----------------------------------------------------------------------------

ATTN = HIDDEN * HEADS * HEAD_DIM * 2 + HIDDEN * KV * HEAD_DIM * 2  # q, o + k, v (no biases)
DENSE_MLP = 3 * HIDDEN * MLP  # gate, up, down
NORMS = 2 * HIDDEN  # input + post-attention RMSNorm
QK_NORM = 2 * HEAD_DIM  # qwen3 / GLM-MoE normalise q and k per head
EMBED = VOCAB * HIDDEN


def test_dense_qwen3_params_by_hand():
    counts = num_params(tiny("qwen3"))
    non_embedding = LAYERS * (ATTN + QK_NORM + DENSE_MLP + NORMS) + HIDDEN  # + final norm
    assert counts == {"total": 2 * EMBED + non_embedding, "embedding": 2 * EMBED,
                      "active_non_embedding": non_embedding}
    assert non_embedding == 61824


def test_dense_llama_params_by_hand():
    counts = num_params(tiny("llama"))
    non_embedding = LAYERS * (ATTN + DENSE_MLP + NORMS) + HIDDEN
    assert counts == {"total": 2 * EMBED + non_embedding, "embedding": 2 * EMBED,
                      "active_non_embedding": non_embedding}


def test_tied_embeddings_count_once():
    model = tiny("qwen3", tie_embeddings=True)
    counts = num_params(model)
    assert counts["embedding"] == EMBED
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    assert counts["active_non_embedding"] == counts["total"] - EMBED


def test_moe_params_by_hand():
    counts = num_params(tiny("moe"))
    routed = EXPERTS * 3 * HIDDEN * EXPERT_MLP  # per layer, routed experts
    layer = ATTN + QK_NORM + NORMS + 3 * HIDDEN * EXPERT_MLP + EXPERTS * HIDDEN + routed  # shared + router
    non_embedding = LAYERS * layer + HIDDEN
    assert counts["total"] == 2 * EMBED + non_embedding
    active_routed = routed * TOP_K // EXPERTS  # each token runs TOP_K of the EXPERTS
    assert counts["active_non_embedding"] == non_embedding - LAYERS * routed + LAYERS * active_routed


@pytest.mark.parametrize("name", ["moe", "sinks"])
def test_moe_active_params_are_fewer_than_all(name):
    model = tiny(name)
    counts = num_params(model)
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    assert counts["active_non_embedding"] < counts["total"] - counts["embedding"]
    assert num_params(model, active=False)["active_non_embedding"] == counts["total"] - counts["embedding"]


@pytest.mark.parametrize("name", ["qwen3", "llama"])
def test_dense_flops_per_token_by_hand(name):
    model = tiny(name)
    active = num_params(model)["active_non_embedding"]
    # the output head (EMBED = vocab x hidden) is a matmul per token: counted once on top of the non-embedding
    assert flops_per_token(model, 32) == 6 * (active + EMBED) + 12 * LAYERS * HEADS * HEAD_DIM * 32


def test_qwen3_flops_per_token_literal():
    assert flops_per_token(tiny("qwen3"), 32) == 6 * (61824 + 19200) + 12 * 2 * 4 * 16 * 32 == 535296


# --- MoE balancer ------------------------------------------------------------------------------------------


def _record_loads(model) -> tuple[dict[int, torch.Tensor], list]:
    """Per router: how often each expert was chosen, counted here independently of the balancer."""
    loads, hooks = {}, []
    for router in (m for m in model.modules() if hasattr(m, "e_score_correction_bias")):
        loads[id(router)] = torch.zeros(EXPERTS)

        def hook(module, inputs, output, key=id(router)):
            loads[key] += torch.nn.functional.one_hot(output[2].flatten(), EXPERTS).sum(0).float()

        hooks.append(router.register_forward_hook(hook))
    return loads, hooks


def test_balancer_moves_each_bias_by_rate_toward_the_mean_load():
    rate = 0.01
    model = tiny("moe").train()
    balancer = MoeBalancer(model, rate)
    assert len(balancer.routers) == LAYERS
    mine, hooks = _record_loads(model)
    before = [r.e_score_correction_bias.clone() for r in balancer.routers]
    model(input_ids=torch.randint(5, VOCAB, (2, 16), generator=torch.Generator().manual_seed(2)))
    for h in hooks:
        h.remove()
    moved = 0
    for router in balancer.routers:
        load = mine[id(router)]
        assert load.sum() == 2 * 16 * TOP_K
        assert torch.equal(balancer.loads[id(router)], load)
    stats = balancer.step()
    for router, old in zip(balancer.routers, before):
        load = mine[id(router)]
        delta = router.e_score_correction_bias - old
        mean = load.mean()
        expected = torch.tensor([rate if n < mean else -rate if n > mean else 0.0 for n in load])
        torch.testing.assert_close(delta, expected, atol=1e-7, rtol=0)
        moved += int((delta != 0).sum())
    assert moved > 0  # the test saw an imbalance to correct
    imbalance = sum((mine[id(r)].max() / mine[id(r)].mean()).item() for r in balancer.routers) / LAYERS
    assert stats["moe/load_imbalance"] == pytest.approx(imbalance)
    assert all(not balancer.loads[id(r)].any() for r in balancer.routers)  # counts reset for the next step


def test_balancer_ignores_eval_forwards():
    model = tiny("moe").eval()
    balancer = MoeBalancer(model, 0.01)
    with torch.no_grad():
        model(input_ids=torch.randint(5, VOCAB, (2, 16)))
    assert all(not balancer.loads[id(r)].any() for r in balancer.routers)
    balancer.step()
    assert all(not r.e_score_correction_bias.any() for r in balancer.routers)


def test_balancer_counts_a_checkpointed_forward_once():
    model = tiny("moe").train()
    model.gradient_checkpointing_enable()
    balancer = MoeBalancer(model, 0.01)
    ids = torch.randint(5, VOCAB, (2, 16))
    model(input_ids=ids, labels=ids).loss.backward()  # backward recomputes every layer's forward
    assert [int(balancer.loads[id(r)].sum()) for r in balancer.routers] == [2 * 16 * TOP_K] * LAYERS


# --- config validation -------------------------------------------------------------------------------------


def test_kv_heads_must_divide_heads():
    with pytest.raises(ValidationError, match="num_kv_heads"):
        ModelConfig(**{**BASE, "num_kv_heads": 3})


def test_experts_per_token_cannot_exceed_experts():
    with pytest.raises(ValidationError, match="experts_per_token"):
        MoeConfig(num_experts=4, experts_per_token=5)


def test_groups_must_divide_experts():
    with pytest.raises(ValidationError, match="num_groups"):
        MoeConfig(num_experts=4, num_groups=3)


def test_moe_arch_gets_a_default_moe_block():
    assert ModelConfig(arch="moe").moe == MoeConfig()
    assert ModelConfig(arch="dense").moe is None
