"""Pure batch bookkeeping between rewards and the learner: prompt order, advantages per group, truncation,
equal-reward filtering, sharding over data-parallel ranks, and the step's reward statistics."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import torch

from learner.grpo import group_advantages

COMPILE_FAILURES = {"COMPILE_ERROR"}


def prompt_order(num_tasks: int, step: int, prompts_per_step: int, seed: int) -> list[int]:
    """Task indices for `step`: epochs are seeded permutations, concatenated. A pure function of the step, so
    a resumed run sees exactly the prompts the uninterrupted run would have seen."""
    out = []
    for pos in range(step * prompts_per_step, (step + 1) * prompts_per_step):
        epoch, offset = divmod(pos, num_tasks)
        out.append(int(np.random.default_rng([seed, epoch]).permutation(num_tasks)[offset]))
    return out


def assign_advantages(samples: list[dict], scale_by_std: bool, truncation: str, truncation_penalty: float,
                      filter_equal: bool) -> tuple[list[dict], dict]:
    """Adds `advantage` (and `weight`) to scored samples grouped by `key`; returns the trainable samples and
    counts. Samples without a reward (sandbox failure) are left out of their group, never zero-filled."""
    groups: dict = {}
    for s in samples:
        groups.setdefault(s["key"], []).append(s)
    kept, filtered, unscored = [], 0, 0
    for group in groups.values():
        scored = [s for s in group if s["reward"] is not None]
        unscored += len(group) - len(scored)
        if len(scored) < 2:
            filtered += 1
            continue
        rewards = [s["reward"] + (truncation_penalty if truncation == "penalty" and s["truncated"] else 0.0)
                   for s in scored]
        r = torch.tensor([rewards], dtype=torch.float64)
        if filter_equal and float(r.max() - r.min()) <= 1e-8:
            filtered += 1
            continue
        adv = group_advantages(r, scale_by_std)[0].tolist()
        for s, a in zip(scored, adv):
            weight = 0.0 if truncation == "mask" and s["truncated"] else 1.0
            kept.append({**s, "advantage": a, "weight": weight})
    return kept, {"groups": len(groups), "groups_filtered": filtered, "unscored": unscored}


def shard(samples: list[dict], world: int, micro_batch: int, minibatches: int) -> tuple[list, list[int], list[int]]:
    """Split into `minibatches` optimizer steps, each sharded over `world` ranks by token count (greedy,
    longest first). Returns per-rank lists of minibatches, the global completion-token count of each
    minibatch (the loss denominator) and the micro-batch count every rank must run for each."""
    per_rank: list[list[list[dict]]] = [[] for _ in range(world)]
    tokens, micro = [], []
    size = math.ceil(len(samples) / minibatches) if samples else 0
    for m in range(minibatches):
        chunk = samples[m * size : (m + 1) * size]
        if not chunk:
            continue
        ranks: list[list[dict]] = [[] for _ in range(world)]
        load = [0] * world
        for s in sorted(chunk, key=lambda s: -len(s["completion_ids"])):
            r = min(range(world), key=load.__getitem__)
            ranks[r].append(s)
            load[r] += len(s["completion_ids"])
        for r in range(world):
            per_rank[r].append(ranks[r])
        tokens.append(max(1, sum(len(s["completion_ids"]) for s in chunk if s.get("weight", 1.0) > 0)))
        micro.append(max(1, max(math.ceil(len(x) / micro_batch) for x in ranks)))
    return per_rank, tokens, micro


def reward_stats(samples: list[dict], prefix: str = "") -> dict:
    """Mean/std reward, per-component means, pass/compile rates and the verdict mix of scored samples."""
    scored = [s for s in samples if s["reward"] is not None]
    rewards = np.array([s["reward"] for s in scored], dtype=float)
    out = {
        f"{prefix}reward_mean": float(rewards.mean()) if len(rewards) else None,
        f"{prefix}reward_std": float(rewards.std()) if len(rewards) else None,
        f"{prefix}pass_rate": float(np.mean([s["passed"] for s in scored])) if scored else None,
        f"{prefix}compile_rate": float(np.mean([s["verdict"] not in COMPILE_FAILURES for s in scored])) if scored else None,
    }
    for comp in sorted({c for s in scored for c in s.get("components", {})}):
        out[f"{prefix}reward_{comp}_mean"] = float(np.mean([s["components"].get(comp, 0.0) for s in scored]))
    if not prefix:
        out["verdicts"] = dict(Counter(s["verdict"] for s in samples))
        out["sandbox_errors"] = len(samples) - len(scored)
    return out
