"""Rollout metrics of one step: reward, pass and compile rates, components, verdict mix, lengths."""

from __future__ import annotations

from collections import Counter

import numpy as np

from rollout.types import ScoredCompletion


def reward_stats(samples: list[ScoredCompletion], prefix: str = "") -> dict:
    """Mean/std reward, per-component means and pass/compile rates over scored samples (a sample the sandbox
    could not score has no reward and is left out); for training steps also the verdict mix and how many
    samples the sandbox lost."""
    scored = [s for s in samples if s.reward is not None]
    rewards = np.array([s.reward for s in scored], dtype=float)
    out = {
        f"{prefix}reward_mean": float(rewards.mean()) if len(rewards) else None,
        f"{prefix}reward_std": float(rewards.std()) if len(rewards) else None,
        f"{prefix}pass_rate": float(np.mean([s.passed for s in scored])) if scored else None,
        f"{prefix}compile_rate": float(np.mean([s.compiled for s in scored])) if scored else None,
    }
    revised = [s for s in scored if s.first_passed is not None]  # rollout.turns > 1
    if revised:  # pass_rate is then the after-feedback rate (the last attempt's)
        out[f"{prefix}first_pass_rate"] = float(np.mean([s.first_passed for s in revised]))
        out[f"{prefix}turns_mean"] = float(np.mean([s.turns for s in revised]))
        retried = [s for s in revised if s.turns > 1]
        out[f"{prefix}revised_pass_rate"] = float(np.mean([s.passed for s in retried])) if retried else None
    for comp in sorted({c for s in scored for c in s.components}):
        out[f"{prefix}reward_{comp}_mean"] = float(np.mean([s.components.get(comp, 0.0) for s in scored]))
    if not prefix:
        out["verdicts"] = dict(Counter(s.verdict.value for s in samples))
        out["sandbox_errors"] = len(samples) - len(scored)
        out["truncated_fraction"] = float(np.mean([s.completion.truncated for s in samples])) if samples else 0.0
        out["completion_tokens_mean"] = (float(np.mean([_sampled(s.completion) for s in samples]))
                                         if samples else 0.0)
    return out


def informative(group: list[ScoredCompletion]) -> bool:
    """A group teaches something only if its rewards differ (else every advantage is 0)."""
    rewards = [s.reward for s in group if s.reward is not None]
    return len(rewards) >= 2 and max(rewards) - min(rewards) > 1e-8


def _sampled(c) -> int:
    """Tokens the policy wrote (a multi-turn trajectory's feedback is not counted)."""
    return sum(c.loss_mask) if c.loss_mask else len(c.completion_ids)
