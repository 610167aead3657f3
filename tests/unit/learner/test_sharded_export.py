"""The HF policy export is sharded like save_pretrained: a shard limit smaller than one tensor stands in for a
30 GB model, and the shards load back (transformers) to the same weights as the one-file export."""

from __future__ import annotations

import json

import torch
from transformers import AutoModelForCausalLM

from learner.checkpoint import save_hf_policy
from learner.tiny_policy import build_tiny_policy


def test_a_sharded_export_loads_back_to_the_same_weights(tmp_path):
    source = build_tiny_policy()
    model = AutoModelForCausalLM.from_pretrained(source)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    largest = max(v.numel() * v.element_size() for v in state.values())
    one = save_hf_policy(state, source, tmp_path / "one")
    many = save_hf_policy(state, source, tmp_path / "many", max_shard_size=largest // 2)
    assert [p.name for p in one.glob("*.safetensors")] == ["model.safetensors"]
    shards = sorted(p.name for p in many.glob("*.safetensors"))
    index = json.loads((many / "model.safetensors.index.json").read_text())
    assert len(shards) > 2 and set(index["weight_map"].values()) == set(shards)
    a = AutoModelForCausalLM.from_pretrained(one).state_dict()
    b = AutoModelForCausalLM.from_pretrained(many).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.equal(a[k], v) for k, v in state.items() if k in a)
