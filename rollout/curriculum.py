"""Online difficulty selection (rollout.curriculum): draw each step's prompts tier by tier, preferring tiers whose
recent pass rate is neither 0 nor 1, where GRPO's groups have a reward spread to learn from.

Tiers are the tasks' `tier` (a procedural family's difficulty level, rewards.families; the embedded tiers; any
task file's). Pure functions of (seed, step, the pass counts the step may see), so a run is reproducible and a
resumed run draws what the uninterrupted one would have, given the counts, which the checkpoint carries:

    step s sees the counts of steps [s - staleness - window, s - staleness - 1]

Those steps were trained before step s may generate (the producer's staleness bound), so their verdicts are in
whatever the timing: the draw never depends on how fast scoring happened to be.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rewards.families import level_weights
from rollout.types import ScoredCompletion

NO_TIER = -1  # the tier key of tasks without one


def tier_of(tier: int | None) -> int:
    return NO_TIER if tier is None else tier


def step_counts(samples: Sequence[ScoredCompletion], tier_by_task: dict[str, int]) -> dict[int, list[int]]:
    """{tier: [passes, scored samples]} of one step (a sample the sandbox could not score is left out)."""
    out: dict[int, list[int]] = {}
    for s in samples:
        if s.reward is None:
            continue
        counts = out.setdefault(tier_by_task[s.task_id], [0, 0])
        counts[0] += int(s.passed)
        counts[1] += 1
    return out


def visible_counts(history: dict[int, dict[int, list[int]]], step: int, staleness: int,
                   window: int) -> dict[int, tuple[int, int]]:
    """The summed counts step `step` may use: steps [step - staleness - window, step - staleness - 1]."""
    last = step - staleness - 1
    total: dict[int, list[int]] = {}
    for s in range(max(0, last - window + 1), last + 1):
        for tier, (passes, n) in history.get(s, {}).items():
            t = total.setdefault(tier, [0, 0])
            t[0] += passes
            t[1] += n
    return {tier: (p, n) for tier, (p, n) in total.items()}


def tier_weights(tiers: Sequence[int], counts: dict[int, tuple[int, int]], floor: float) -> list[float]:
    """rewards.families.level_weights over these tiers: p(1 - p) of the smoothed pass rate, plus `floor`."""
    by_index = {i: counts.get(t, (0, 0)) for i, t in enumerate(tiers)}
    return level_weights(by_index, len(tiers), floor)


def curriculum_order(tasks_by_tier: dict[int, list[int]], weights: Sequence[float], step: int, count: int,
                     seed: int) -> list[int]:
    """`count` task indices for `step`: a tier by `weights` (in sorted-tier order), then a task of it uniformly;
    one seeded generator per step."""
    tiers = sorted(tasks_by_tier)
    rng = np.random.default_rng([seed, step, 104729])
    picks = rng.choice(len(tiers), size=count, p=np.asarray(weights, dtype=float))
    return [int(tasks_by_tier[tiers[i]][rng.integers(len(tasks_by_tier[tiers[i]]))]) for i in picks]
