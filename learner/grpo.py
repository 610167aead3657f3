"""GRPO math, free of I/O: group advantages, the clipped policy loss with clip-higher, the k3 KL estimator,
truncated importance sampling between the rollout engine and the learner, and token-level aggregation.

Shapes: `_GK` is [num_groups, num_samples_per_group]; `_BT` is [batch, tokens]. Every loss returns the
*sum* over tokens divided by an explicit denominator, the number of completion tokens in the whole
global batch (all micro-batches, all data-parallel ranks): summing micro-batch losses then equals the
full-batch loss, so gradient accumulation and data parallelism do not change the update.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def group_advantages(rewards_GK: torch.Tensor, scale_by_std: bool = True, eps: float = 1e-6) -> torch.Tensor:
    """GRPO (Shao et al. 2024): (r - mean_group) / (std_group + eps). With scale_by_std=False this is
    Dr. GRPO (Liu et al. 2025, "Understanding R1-Zero-Like Training"): mean-centred only, no std bias."""
    centred = rewards_GK - rewards_GK.mean(dim=1, keepdim=True)
    if not scale_by_std:
        return centred
    return centred / (rewards_GK.std(dim=1, unbiased=False, keepdim=True) + eps)


def informative_groups(rewards_GK: torch.Tensor, atol: float = 1e-8) -> torch.Tensor:
    """[G] bool: groups whose rewards are not all equal (all-equal groups carry no GRPO signal)."""
    return (rewards_GK.max(dim=1).values - rewards_GK.min(dim=1).values) > atol


def kl_k3(logprobs_BT: torch.Tensor, ref_logprobs_BT: torch.Tensor, log_ratio_clamp: float = 20.0,
          kl_clamp: float = 10.0) -> torch.Tensor:
    """Per-token KL(pi || ref) estimate k3 = exp(ref - lp) - (ref - lp) - 1 (Schulman, "Approximating KL
    Divergence", 2020): unbiased, always >= 0. As verl ships it ("low_var_kl"): the log-ratio clamped to
    +-log_ratio_clamp before the exp (one token the policy has all but ruled out, ref - lp = 60, would give
    e^60), and the estimate to at most kl_clamp."""
    log_ratio = (ref_logprobs_BT - logprobs_BT).clamp(-log_ratio_clamp, log_ratio_clamp)
    return (torch.exp(log_ratio) - log_ratio - 1.0).clamp(max=kl_clamp)


def truncated_is_weights(old_logprobs_BT: torch.Tensor, rollout_logprobs_BT: torch.Tensor,
                         cap: float = 2.0) -> torch.Tensor:
    """min(pi_learner_old / pi_rollout, cap): corrects for the inference engine's numerics differing from
    the learner's (Yao et al. 2025, truncated importance sampling). No gradient flows through it."""
    return torch.exp(old_logprobs_BT - rollout_logprobs_BT).clamp(max=cap).detach()


def truncated_completion_mask(mask_BT: torch.Tensor, truncated_B: torch.Tensor) -> torch.Tensor:
    """Drop every token of completions cut by the length limit (their reward says nothing about the end)."""
    return mask_BT * (~truncated_B).to(mask_BT.dtype).unsqueeze(1)


@dataclass
class LossOutput:
    loss: torch.Tensor  # scalar: sum over tokens / num_tokens_global
    metrics: dict[str, torch.Tensor]  # token sums (divide by the same denominator to average)


def grpo_loss(logprobs_BT: torch.Tensor, old_logprobs_BT: torch.Tensor, advantages_B: torch.Tensor,
              mask_BT: torch.Tensor, num_tokens_global: int | float, clip_low: float = 0.2,
              clip_high: float = 0.28, kl_coef: float = 0.0, ref_logprobs_BT: torch.Tensor | None = None,
              is_weights_BT: torch.Tensor | None = None, dual_clip: float | None = None,
              log_ratio_clamp: float = 20.0, kl_clamp: float = 10.0) -> LossOutput:
    """Clipped surrogate with separate low/high clip (clip-higher, Yu et al. 2025 "DAPO"), optional k3 KL
    to a frozen reference, optional truncated-IS weights, token-level normalisation by `num_tokens_global`.

    per token: -min(ratio * A, clip(ratio, 1 - clip_low, 1 + clip_high) * A) * w + kl_coef * k3

    Robustness as verl and OpenRLHF ship it: the log-ratio is clamped to +-log_ratio_clamp before the exp (a
    stale or numerically off token cannot produce inf); with `dual_clip` = c > 1, a negative-advantage token's
    loss is also capped at -c * A (Ye et al. 2020, "dual-clip PPO"): the plain clip bounds the ratio only from
    the side the advantage pushes, so a huge ratio on a negative advantage would otherwise be unbounded.
    """
    if dual_clip is not None and dual_clip <= 1.0:
        raise ValueError(f"dual_clip must be > 1 (got {dual_clip})")
    if num_tokens_global <= 0:
        raise ValueError("num_tokens_global must be > 0 (no completion tokens in the global batch)")
    if kl_coef > 0 and ref_logprobs_BT is None:
        raise ValueError("kl_coef > 0 needs ref_logprobs_BT")
    mask = mask_BT.to(logprobs_BT.dtype)
    adv = advantages_B.unsqueeze(1).to(logprobs_BT.dtype)
    ratio = torch.exp((logprobs_BT - old_logprobs_BT).clamp(-log_ratio_clamp, log_ratio_clamp))
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high) * adv
    per_token = -torch.minimum(unclipped, clipped)
    if dual_clip is not None:
        capped = torch.minimum(per_token, -dual_clip * adv)
        per_token = torch.where(adv < 0, capped, per_token)
    if is_weights_BT is not None:
        per_token = per_token * is_weights_BT
    metrics = {"clip_fraction_sum": ((clipped < unclipped).to(mask.dtype) * mask).sum().detach(),
               "ratio_sum": (ratio * mask).sum().detach()}
    if kl_coef > 0:
        kl = kl_k3(logprobs_BT, ref_logprobs_BT, log_ratio_clamp, kl_clamp)
        per_token = per_token + kl_coef * kl
        metrics["kl_sum"] = (kl * mask).sum().detach()
    return LossOutput((per_token * mask).sum() / num_tokens_global, metrics)


def warmup_factor(step: int, warmup_steps: int) -> float:
    """Linear LR warmup: the optimizer step `step` (0-based) runs at lr * (step + 1) / warmup_steps until the
    full LR (verl's lr_warmup_steps, Hugging Face's constant schedule with warmup)."""
    if warmup_steps <= 0:
        return 1.0
    return min(1.0, (step + 1) / warmup_steps)
