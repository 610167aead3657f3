"""The learner's log-probs are those of the distribution vLLM sampled from (logits / temperature), computed over
completion positions only and in chunks, with the same values and gradients as the plain full computation and
less memory held for backward."""

from __future__ import annotations

import math
import random

import pytest
import torch
import torch.nn.functional as F

from learner.policy import first_completion_position, pad_batch, token_logprobs
from rollout.types import TrainingSample


class FixedLogits(torch.nn.Module):
    """A 'model' whose logits at every position are the given row (honours logits_to_keep like HF models)."""

    def __init__(self, row: list[float]) -> None:
        super().__init__()
        self.row = torch.nn.Parameter(torch.tensor(row))

    def forward(self, input_ids, attention_mask=None, use_cache=False, logits_to_keep=0):
        b, t = input_ids.shape
        logits = self.row.expand(b, t, -1)
        return type("Out", (), {"logits": logits[:, -logits_to_keep:] if logits_to_keep else logits})


def test_temperature_divides_the_logits_hand_values():
    # logits [2, 0]: at T=1 log p(token 0) = -log(1 + e^-2) = -0.126928; at T=0.5 the logits are [4, 0]:
    # -log(1 + e^-4) = -0.018150; token 1 at T=0.5: -4 - log(1 + e^-4) = -4.018150
    model = FixedLogits([2.0, 0.0])
    ids = torch.tensor([[1, 0, 1]])
    at1, _ = token_logprobs(model, ids, torch.ones_like(ids))
    at_half, ent = token_logprobs(model, ids, torch.ones_like(ids), with_entropy=True, temperature=0.5)
    assert at1[0].tolist() == pytest.approx([-0.126928, -2.126928], abs=1e-5)
    assert at_half[0].tolist() == pytest.approx([-0.018150, -4.018150], abs=1e-5)
    p = 1 / (1 + math.exp(-4))  # entropy of [p, 1-p] at T=0.5
    assert ent[0].tolist() == pytest.approx([-(p * math.log(p) + (1 - p) * math.log(1 - p))] * 2, abs=1e-5)


def tiny_lm(vocab: int = 300):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      tie_word_embeddings=True)
    return Qwen2ForCausalLM(cfg)


def packed_batch(vocab: int = 300) -> list[TrainingSample]:
    rng = random.Random(3)
    out = []
    for p, c in [(9, 5), (14, 11), (6, 17), (20, 3)]:  # prompts of different lengths, right padding
        out.append(TrainingSample(tuple(rng.randrange(vocab) for _ in range(p)),
                                  tuple(rng.randrange(vocab) for _ in range(c)), tuple([-1.0] * c), 1.0))
    return out


def reference_logprobs(model, ids, attn, temperature):
    """The plain computation: every position, full vocabulary, one fp32 log-softmax."""
    logits = model(input_ids=ids, attention_mask=attn).logits[:, :-1].float() / temperature
    return F.log_softmax(logits, -1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)


def saved_bytes(fn) -> int:
    """Bytes of distinct storages autograd keeps for backward while `fn` runs (what training memory holds)."""
    seen: dict[int, int] = {}

    def pack(t):
        st = t.untyped_storage()
        seen[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_chunked_completion_only_logprobs_match_the_plain_ones(chunk):
    model = tiny_lm()
    samples = packed_batch()
    ids, attn, comp = pad_batch(samples, pad_id=0)
    first = first_completion_position(samples)
    assert first == 5 and comp[:, :first].sum() == 0  # the shortest prompt has 6 tokens
    want = reference_logprobs(model, ids, attn, 0.7)
    (want * comp).sum().backward()
    want_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    got, _ = token_logprobs(model, ids, attn, temperature=0.7, first=first, chunk_tokens=chunk)
    assert got.shape == want.shape
    torch.testing.assert_close(got * comp, want * comp, rtol=1e-5, atol=1e-5)
    (got * comp).sum().backward()
    for g, w in zip((p.grad for p in model.parameters()), want_grads):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6)


def test_chunking_bounds_what_backward_holds():
    """fp32 full-vocab log-softmax over the whole micro-batch is what blows up at 150k vocabularies. With bf16
    compute (the GPU recipe) the plain path holds it for backward; the chunked one holds only the model's own
    bf16 logits over completion positions, recomputing fp32 one chunk at a time."""
    vocab = 4000  # vocabulary >> hidden size, as in real models
    model = tiny_lm(vocab)
    samples = packed_batch(vocab)
    ids, attn, comp = pad_batch(samples, pad_id=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain = saved_bytes(lambda: reference_logprobs(model, ids, attn, 0.7).sum())
        chunked = saved_bytes(lambda: token_logprobs(model, ids, attn, temperature=0.7,
                                                     first=first_completion_position(samples), chunk_tokens=8)[0].sum())
    full_fp32 = ids.shape[0] * (ids.shape[1] - 1) * vocab * 4
    common = plain - full_fp32  # the model's activations and bf16 weight copies, held by both
    assert common > 0  # the plain path holds at least the whole fp32 log-softmax
    # chunked: ~ bf16 logits over 19 of 24 positions = 0.4 x full_fp32; never a whole fp32 copy
    assert chunked - common < 0.5 * full_fp32, (chunked, plain, full_fp32)
