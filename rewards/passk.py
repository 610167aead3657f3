"""pass@k, the unbiased estimator of Chen et al. (2021, "Evaluating Large Language Models Trained on Code")."""

from __future__ import annotations

from collections.abc import Iterable
from math import comb


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples drawn without replacement from n (c correct) passes:
    1 - C(n-c, k) / C(n, k)."""
    if not 0 <= c <= n or k < 1:
        raise ValueError(f"need 0 <= c <= n and k >= 1, got n={n} c={c} k={k}")
    if k > n:
        raise ValueError(f"k={k} exceeds the number of samples n={n}")
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def mean_pass_at_k(counts: Iterable[tuple[int, int]], k: int) -> float:
    """Average pass@k over tasks given (n, c) per task; tasks with fewer than k samples are an error."""
    values = [pass_at_k(n, c, k) for n, c in counts]
    if not values:
        raise ValueError("no tasks to average")
    return sum(values) / len(values)


def available_ks(sample_counts: Iterable[int], ks: tuple[int, ...] = (1, 2, 5, 10, 20, 50, 100)) -> list[int]:
    """The k values every task has enough samples for."""
    least = min(sample_counts, default=0)
    return [k for k in ks if k <= least]
