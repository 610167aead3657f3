"""Batch bookkeeping against hand-computed values: prompt order, advantages per group, truncation,
equal-reward filtering, sharding and the global token denominator."""

from __future__ import annotations

import math

import pytest

from learner.batch import assign_advantages, prompt_order, reward_stats, shard


def sample(key, idx, reward, n=4, truncated=False, verdict="OK", passed=True):
    return {"key": key, "index": idx, "reward": reward, "truncated": truncated, "completion_ids": [1] * n,
            "verdict": verdict, "passed": passed, "components": {"compile": 1.0}}


def test_prompt_order_is_a_pure_function_of_the_step_and_covers_each_epoch():
    steps = [prompt_order(10, s, 4, seed=3) for s in range(5)]  # 20 positions = 2 epochs of 10
    assert steps == [prompt_order(10, s, 4, seed=3) for s in range(5)]
    flat = [i for s in steps for i in s]
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:]) == list(range(10))
    assert flat[:10] != list(range(10))  # shuffled
    assert prompt_order(10, 0, 4, seed=4) != steps[0]


def test_advantages_by_hand_and_equal_groups_filtered():
    samples = [sample("a", 0, 1.0), sample("a", 1, 3.0), sample("b", 0, 2.0), sample("b", 1, 2.0)]
    kept, counts = assign_advantages(samples, scale_by_std=False, truncation="keep", truncation_penalty=-1,
                                     filter_equal=True)
    assert [s["advantage"] for s in kept] == [-1.0, 1.0]  # mean 2: -1, +1 (Dr. GRPO: no std scaling)
    assert counts == {"groups": 2, "groups_filtered": 1, "unscored": 0}
    kept, _ = assign_advantages(samples, scale_by_std=True, truncation="keep", truncation_penalty=-1, filter_equal=True)
    assert [s["advantage"] for s in kept] == pytest.approx([-1.0, 1.0], abs=1e-5)  # std 1 (population)


def test_unscored_samples_leave_their_group_and_truncation_modes():
    samples = [sample("a", 0, 0.0), sample("a", 1, None), sample("a", 2, 3.0, truncated=True)]
    kept, counts = assign_advantages(samples, False, "mask", -1.0, True)
    assert counts["unscored"] == 1 and len(kept) == 2
    assert [s["weight"] for s in kept] == [1.0, 0.0]  # mask: the truncated sample trains no tokens
    kept, _ = assign_advantages(samples, False, "penalty", -1.0, True)
    assert [s["advantage"] for s in kept] == [-1.0, 1.0]  # rewards 0 and 3-1=2, mean 1


def test_shard_balances_tokens_and_counts_the_global_denominator():
    samples = [sample("a", i, 1.0, n=n) for i, n in enumerate([10, 1, 7, 3, 5, 2])]
    samples[1]["weight"] = 0.0  # masked: not in the denominator
    per_rank, tokens, micro = shard(samples, world=2, micro_batch=2, minibatches=1)
    assert tokens == [10 + 7 + 3 + 5 + 2]
    loads = [sum(len(s["completion_ids"]) for s in per_rank[r][0]) for r in range(2)]
    assert sorted(loads) == [14, 14]  # greedy longest-first: 10+3+1 | 7+5+2
    assert micro == [max(math.ceil(len(per_rank[r][0]) / 2) for r in range(2))]
    per_rank, tokens, micro = shard(samples, world=1, micro_batch=8, minibatches=2)
    assert len(per_rank[0]) == 2 and tokens == [10 + 7, 3 + 5 + 2]


def test_reward_stats():
    samples = [sample("a", 0, 1.0), sample("a", 1, -1.0, verdict="COMPILE_ERROR", passed=False), sample("a", 2, None,
                                                                                                    verdict="SANDBOX_ERROR")]
    st = reward_stats(samples)
    assert st["reward_mean"] == 0.0 and st["compile_rate"] == 0.5 and st["pass_rate"] == 0.5
    assert st["verdicts"] == {"OK": 1, "COMPILE_ERROR": 1, "SANDBOX_ERROR": 1} and st["sandbox_errors"] == 1
