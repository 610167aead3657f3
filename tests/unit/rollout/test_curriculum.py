"""Online difficulty selection's pure parts against hand values."""

from __future__ import annotations

import pytest

from rollout.curriculum import NO_TIER, curriculum_order, step_counts, tier_of, tier_weights, visible_counts
from rollout.types import Completion, ScoredCompletion
from sandbox.types import Verdict


def test_a_step_sees_only_steps_trained_before_it_may_generate():
    history = {s: {0: [s, 10]} for s in range(10)}  # step s: s passes of 10
    # staleness 0, window 2: step 5 sees steps 3 and 4
    assert visible_counts(history, 5, 0, 2) == {0: (7, 20)}
    # staleness 2, window 3: step 5 sees steps 0..2
    assert visible_counts(history, 5, 2, 3) == {0: (3, 30)}
    assert visible_counts(history, 1, 1, 4) == {}  # nothing trained yet that step 1 may wait for


def test_weights_favour_a_pass_rate_of_one_half():
    # smoothed p = (passes + 1) / (n + 2): tier 0 -> 99/100, tier 1 -> 50/100, tier 2 -> 1/100; unseen -> 1/2
    w = tier_weights([0, 1, 2, 5], {0: (98, 98), 1: (49, 98), 2: (0, 98)}, floor=0.0)
    raw = [0.99 * 0.01, 0.25, 0.01 * 0.99, 0.25]
    assert w == pytest.approx([r / sum(raw) for r in raw])


def test_order_draws_tiers_by_weight_and_is_a_function_of_the_step():
    by_tier = {0: [0, 1], 1: [2, 3, 4], 2: [5]}
    only_middle = curriculum_order(by_tier, [0.0, 1.0, 0.0], step=3, count=50, seed=0)
    assert set(only_middle) <= {2, 3, 4} and len(set(only_middle)) == 3
    mixed = curriculum_order(by_tier, [0.2, 0.5, 0.3], step=3, count=8, seed=0)
    assert mixed == curriculum_order(by_tier, [0.2, 0.5, 0.3], step=3, count=8, seed=0)
    assert mixed != curriculum_order(by_tier, [0.2, 0.5, 0.3], step=4, count=8, seed=0)


def test_step_counts_leave_out_unscored_samples_and_tierless_tasks_share_a_key():
    def s(task_id, verdict, reward):
        c = Completion(("k",), 0, (1,), (2,), (-0.1,), "x", "stop", 0)
        return ScoredCompletion(c, task_id, verdict, verdict is Verdict.OK, reward)

    samples = [s("a", Verdict.OK, 1.0), s("a", Verdict.WRONG_ANSWER, 0.0), s("b", Verdict.SANDBOX_ERROR, None),
               s("c", Verdict.OK, 1.0)]
    assert step_counts(samples, {"a": 1, "b": 1, "c": tier_of(None)}) == {1: [1, 2], NO_TIER: [1, 1]}
