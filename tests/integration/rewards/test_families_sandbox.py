"""Procedural tasks through the real sandbox: every reference passes its Python-computed tests at every level,
and an answer that ignores its input fails."""

from __future__ import annotations

import pytest

from rewards.families import FAMILIES, LEVELS, generate
from rewards.scorer import Scorer, canonical_items


@pytest.fixture
def pool(backend, make_pool):
    return make_pool(backend)


def test_references_pass_and_a_constant_answer_fails(pool):
    tasks = list(generate(list(FAMILIES), list(range(LEVELS)), per_level=1, seed=11))
    scorer = Scorer(pool)
    refs = scorer.score(canonical_items(tasks))
    assert [s.passed for s in refs] == [True] * len(tasks), [(s.task_id, s.detail) for s in refs if not s.passed]
    constant = scorer.score([(t, "    return {};\n}\n") for t in tasks])
    assert not any(s.passed for s in constant), [s.task_id for s in constant if s.passed]
