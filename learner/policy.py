"""The trained policy as a plain Hugging Face causal LM: loading (full or LoRA), token log-probs, entropy,
and the export of clean HF-named weights (LoRA merged) for vLLM and checkpoints."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

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
    next-token targets (position t predicts token t+1). A multi-turn sample's feedback tokens sit inside its
    completion with loss_mask 0: they are context for the next attempt, never trained on."""
    seqs = [(*s.prompt_ids, *s.completion_ids) for s in samples]
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(seqs), width), dtype=torch.long)
    comp = torch.zeros((len(seqs), width - 1))
    for row, (s, seq) in enumerate(zip(samples, seqs)):
        ids[row, : len(seq)] = torch.tensor(seq)
        attn[row, : len(seq)] = 1
        p, c = len(s.prompt_ids), len(s.completion_ids)
        comp[row, p - 1 : p - 1 + c] = torch.tensor(s.loss_mask, dtype=comp.dtype) if s.loss_mask else 1.0
    return ids, attn, comp


def token_logprobs(model, ids: torch.Tensor, attn: torch.Tensor, with_entropy: bool = False,
                   temperature: float = 1.0, first: int = 0, chunk_tokens: int = 4096):
    """log pi_T(token_{t+1} | tokens_<=t) as [B, T-1] (and the per-token entropy of pi_T if asked), where
    pi_T = softmax(logits / temperature) is the distribution the rollout engine sampled from.

    Memory for real vocabularies (150k entries): only positions t >= `first` get logits at all (`first` = the
    earliest completion position of the micro-batch; earlier ones are returned as 0 and must be masked), and
    the fp32 log-softmax runs over `chunk_tokens` tokens at a time under activation checkpointing, so neither
    forward nor backward ever holds fp32 full-vocabulary log-probs for the whole micro-batch (backward
    recomputes one chunk at a time). The model's own (bf16) logits for positions >= `first` remain."""
    width = ids.shape[1]
    if not 0 <= first < width - 1:
        raise ValueError(f"token_logprobs: first={first} outside [0, {width - 1})")
    # logits_to_keep=k keeps the last k hidden states: positions first..T-1; the last one predicts nothing.
    logits = model(input_ids=ids, attention_mask=attn, use_cache=False, logits_to_keep=width - first).logits[:, :-1]
    targets = ids[:, first + 1 :]
    step = max(1, chunk_tokens // max(1, ids.shape[0]))  # positions per chunk
    checkpointed = torch.is_grad_enabled() and logits.requires_grad
    chosen, entropy = [], []
    for s in range(0, logits.shape[1], step):
        part, tgt = logits[:, s : s + step], targets[:, s : s + step]
        if checkpointed:
            chosen.append(checkpoint(_sampled_logprobs, part, tgt, temperature, use_reentrant=False))
        else:
            chosen.append(_sampled_logprobs(part, tgt, temperature))
        if with_entropy:
            with torch.no_grad():
                entropy.append(_entropy(part, temperature))
    head = torch.zeros((ids.shape[0], first), dtype=chosen[0].dtype, device=chosen[0].device)
    out = torch.cat([head, *chosen], dim=1)
    return out, (torch.cat([head, *entropy], dim=1) if with_entropy else None)


def _sampled_logprobs(logits: torch.Tensor, targets: torch.Tensor, temperature: float) -> torch.Tensor:
    logp = F.log_softmax(logits.float() / temperature, dim=-1)
    return logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def _entropy(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    logp = F.log_softmax(logits.float() / temperature, dim=-1)
    return -(logp.exp() * logp).sum(-1)


def first_completion_position(samples: list[TrainingSample]) -> int:
    """The earliest [B, T-1] position any sample's completion is predicted from: its prompt length - 1."""
    return max(0, min(len(s.prompt_ids) for s in samples) - 1)


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
