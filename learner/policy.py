"""The trained policy as a plain Hugging Face causal LM: loading (full or LoRA), token log-probs, entropy,
and the export of clean HF-named weights (LoRA merged) for vLLM and checkpoints."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rollout.types import TrainingSample


def load_policy(path: str, dtype: str = "float32", lora_rank: int = 0, lora_alpha: int = 32,
                lora_targets: list[str] | None = None):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
    model.config.use_cache = False  # training forward; packed/padded batches need it off
    if lora_rank:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=lora_rank, lora_alpha=lora_alpha, lora_dropout=0.0,
                                                 target_modules=lora_targets or ["q_proj", "v_proj"]))
    return model


def pad_batch(samples: list[TrainingSample], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded input_ids [B, T], attention mask [B, T], and completion mask [B, T-1] aligned with the
    next-token targets (position t predicts token t+1)."""
    seqs = [(*s.prompt_ids, *s.completion_ids) for s in samples]
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(seqs), width), dtype=torch.long)
    comp = torch.zeros((len(seqs), width - 1))
    for row, (s, seq) in enumerate(zip(samples, seqs)):
        ids[row, : len(seq)] = torch.tensor(seq)
        attn[row, : len(seq)] = 1
        p, c = len(s.prompt_ids), len(s.completion_ids)
        comp[row, p - 1 : p - 1 + c] = 1.0
    return ids, attn, comp


def token_logprobs(model, ids: torch.Tensor, attn: torch.Tensor, with_entropy: bool = False):
    """log pi(token_{t+1} | tokens_<=t) for every position, [B, T-1] (and per-token entropy if asked)."""
    logits = model(input_ids=ids, attention_mask=attn, use_cache=False).logits[:, :-1].float()
    logp = F.log_softmax(logits, dim=-1)
    chosen = logp.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    if not with_entropy:
        return chosen, None
    with torch.no_grad():
        entropy = -(logp.exp() * logp).sum(-1)
    return chosen, entropy


def rollout_logprob_tensor(samples: list[TrainingSample], width: int) -> torch.Tensor:
    """vLLM's sampled-token logprobs placed at the same [B, T-1] positions as `token_logprobs`."""
    out = torch.zeros((len(samples), width - 1))
    for row, s in enumerate(samples):
        p = len(s.prompt_ids)
        out[row, p - 1 : p - 1 + len(s.rollout_logprobs)] = torch.tensor(s.rollout_logprobs)
    return out


def clean_state_dict(model, tie_word_embeddings: bool) -> dict[str, torch.Tensor]:
    """HF-named full weights; LoRA adapters merged into copies (the live adapters stay untouched)."""
    if hasattr(model, "peft_config"):
        merged = {}
        base = model.get_base_model()
        for name, module in base.named_modules():
            if hasattr(module, "get_delta_weight") and hasattr(module, "base_layer"):
                delta = sum(module.get_delta_weight(a) for a in module.active_adapters)
                merged[f"{name}.weight"] = module.base_layer.weight.detach() + delta.detach()
        state = {}
        for key, value in base.state_dict().items():
            if "lora_" in key:
                continue
            key = key.replace(".base_layer.", ".")
            state[key] = merged.get(key, value)
    else:
        state = dict(model.state_dict())
    return hf_weights(state, tie_word_embeddings)


def hf_weights(state: dict[str, torch.Tensor], tie_word_embeddings: bool) -> dict[str, torch.Tensor]:
    """Detached fp32 copies, without the tied lm_head (vLLM and save_pretrained tie it to the embedding)."""
    if tie_word_embeddings:
        state = {k: v for k, v in state.items() if k != "lm_head.weight"}
    return {k: v.detach().to(torch.float32 if v.is_floating_point() else v.dtype).contiguous().clone()
            for k, v in state.items()}
