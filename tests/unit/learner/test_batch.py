"""Batch bookkeeping against hand-computed values: advantages per group, truncation, equal-reward filtering,
sharding and the global token denominator."""

from __future__ import annotations

import math

import pytest

from dataclasses import replace

from learner.batch import assign_advantages, shard
from tests.unit.rollout.records import scored as sample


def test_advantages_by_hand_and_equal_groups_filtered():
    samples = [sample("a", 0, 1.0), sample("a", 1, 3.0), sample("b", 0, 2.0), sample("b", 1, 2.0)]
    kept, counts = assign_advantages(samples, scale_by_std=False, truncation="keep", truncation_penalty=-1,
                                     filter_equal=True)
    assert [s.advantage for s in kept] == [-1.0, 1.0]  # mean 2: -1, +1 (Dr. GRPO: no std scaling)
    assert [s.ident for s in kept] == [(("a",), 0), (("a",), 1)]
    assert counts == {"groups": 2, "groups_filtered": 1, "unscored": 0}
    kept, _ = assign_advantages(samples, scale_by_std=True, truncation="keep", truncation_penalty=-1, filter_equal=True)
    assert [s.advantage for s in kept] == pytest.approx([-1.0, 1.0], abs=1e-5)  # std 1 (population)


def test_unscored_samples_leave_their_group_and_truncation_modes():
    samples = [sample("a", 0, 0.0), sample("a", 1, None), sample("a", 2, 3.0, truncated=True)]
    kept, counts = assign_advantages(samples, False, "mask", -1.0, True)
    assert counts["unscored"] == 1 and len(kept) == 2
    assert [s.weight for s in kept] == [1.0, 0.0]  # mask: the truncated sample trains no tokens
    kept, _ = assign_advantages(samples, False, "penalty", -1.0, True)
    assert [s.advantage for s in kept] == [-1.0, 1.0]  # rewards 0 and 3-1=2, mean 1


def test_shard_balances_tokens_and_counts_the_global_denominator():
    samples, _ = assign_advantages([sample("a", i, float(i), n=n) for i, n in enumerate([10, 1, 7, 3, 5, 2])],
                                   False, "keep", 0.0, True)
    samples[1] = replace(samples[1], weight=0.0)  # masked: not in the denominator
    per_rank, tokens, micro = shard(samples, world=2, micro_batch=2, minibatches=1)
    assert tokens == [10 + 7 + 3 + 5 + 2]
    loads = [sum(len(s.completion_ids) for s in per_rank[r][0]) for r in range(2)]
    assert sorted(loads) == [14, 14]  # greedy longest-first: 10+3+1 | 7+5+2
    assert micro == [max(math.ceil(len(per_rank[r][0]) / 2) for r in range(2))]
    per_rank, tokens, micro = shard(samples, world=1, micro_batch=8, minibatches=2)
    assert len(per_rank[0]) == 2 and tokens == [10 + 7, 3 + 5 + 2]
