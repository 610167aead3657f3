"""Pure batch bookkeeping between rewards and the learner: advantages per group, truncation, equal-reward
filtering, and sharding over data-parallel ranks."""

from __future__ import annotations

import math

import torch

from learner.grpo import group_advantages
from rollout.types import ScoredCompletion, TrainingSample, group_by_key


def assign_advantages(samples: list[ScoredCompletion], scale_by_std: bool, truncation: str, truncation_penalty: float,
                      filter_equal: bool) -> tuple[list[TrainingSample], dict]:
    """Group-relative advantages for scored samples grouped by key; returns the trainable samples and counts.
    Samples without a reward (sandbox failure) are left out of their group, never zero-filled."""
    groups = group_by_key(samples)
    kept, filtered, unscored = [], 0, 0
    for group in groups.values():
        scored = [s for s in group if s.reward is not None]
        unscored += len(group) - len(scored)
        if len(scored) < 2:
            filtered += 1
            continue
        rewards = [s.reward + (truncation_penalty if truncation == "penalty" and s.completion.truncated else 0.0)
                   for s in scored]
        r = torch.tensor([rewards], dtype=torch.float64)
        if filter_equal and float(r.max() - r.min()) <= 1e-8:
            filtered += 1
            continue
        adv = group_advantages(r, scale_by_std)[0].tolist()
        for s, a in zip(scored, adv):
            weight = 0.0 if truncation == "mask" and s.completion.truncated else 1.0
            kept.append(TrainingSample.of(s, a, weight))
    return kept, {"groups": len(groups), "groups_filtered": filtered, "unscored": unscored}


def shard(samples: list[TrainingSample], world: int, micro_batch: int,
          minibatches: int) -> tuple[list, list[int], list[int]]:
    """Split into `minibatches` optimizer steps, each sharded over `world` ranks by token count (greedy,
    longest first). Returns per-rank lists of minibatches, the global completion-token count of each
    minibatch (the loss denominator) and the micro-batch count every rank must run for each."""
    per_rank: list[list[list[TrainingSample]]] = [[] for _ in range(world)]
    tokens, micro = [], []
    size = math.ceil(len(samples) / minibatches) if samples else 0
    for m in range(minibatches):
        chunk = samples[m * size : (m + 1) * size]
        if not chunk:
            continue
        ranks: list[list[TrainingSample]] = [[] for _ in range(world)]
        load = [0] * world
        for s in sorted(chunk, key=lambda s: -len(s.completion_ids)):  # forward cost: every token, feedback too
            r = min(range(world), key=load.__getitem__)
            ranks[r].append(s)
            load[r] += len(s.completion_ids)
        for r in range(world):
            per_rank[r].append(ranks[r])
        tokens.append(max(1, sum(s.trained_tokens for s in chunk if s.weight > 0)))
        micro.append(max(1, max(math.ceil(len(x) / micro_batch) for x in ranks)))
    return per_rank, tokens, micro
