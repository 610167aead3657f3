"""Procedural task families (rewards.families): deterministic, content-identified, disjoint splits, and the
difficulty weights against hand values."""

from __future__ import annotations

import random

import pytest

from configs.base import TaskSplit
from rewards.families import FAMILIES, LEVELS, generate, instance, level_weights
from rewards.tasks import task_from_row


def test_generation_is_deterministic_and_distinct():
    a = list(generate(list(FAMILIES), list(range(LEVELS)), per_level=6, seed=3))
    b = list(generate(list(FAMILIES), list(range(LEVELS)), per_level=6, seed=3))
    assert [t.task_id for t in a] == [t.task_id for t in b] and len(a) == len(FAMILIES) * LEVELS * 6
    assert len({t.task_id for t in a}) == len(a)
    assert [t.task_id for t in generate(["affine"], [0], 6, seed=4)] != [t.task_id for t in a[:6]]
    for t in a:
        family, level = t.task_id.split("/")[1:3]
        assert t.source == f"procedural:{family}" and level == f"d{t.tier}" and t.tests.count("assert(") == 5


def test_the_id_is_the_content():
    """The same instance drawn twice is one task, so it can never sit on both sides of the split."""
    first = instance("array", 2, random.Random(7))
    again = instance("array", 2, random.Random(7))
    assert first == again and first.task_id == again.task_id
    tasks = list(generate(list(FAMILIES), list(range(LEVELS)), per_level=10))
    train, heldout = TaskSplit().split(tasks)
    assert train and heldout and not {t.task_id for t in train} & {t.task_id for t in heldout}


def test_a_level_changes_what_is_asked():
    docs = {level: instance("string", level, random.Random(1)).prompt for level in range(LEVELS)}
    assert len(set(docs.values())) == LEVELS and "reversed" in docs[2] and "even positions" in docs[3]
    assert "long long compute(long long a, long long b) {" in instance("affine", 0, random.Random(0)).prompt


def test_instances_load_as_task_rows():
    t = instance("affine", 3, random.Random(2))
    row = {"task_id": t.task_id, "prompt": t.prompt, "tests": t.tests, "reference": t.reference, "tier": t.tier}
    loaded = task_from_row(row, "row 1")
    assert (loaded.kind, loaded.entry_point, loaded.reference) == ("function", "compute", t.reference)


def test_bad_family_or_level():
    with pytest.raises(ValueError, match="unknown task family 'sort'"):
        instance("sort", 0, random.Random(0))
    with pytest.raises(ValueError, match="outside 0..3"):
        instance("affine", 4, random.Random(0))


def test_level_weights_hand_values():
    # unseen: p = 1/2 -> 0.25 + 0.05; all passed 8/8: p = 9/10 -> 0.09 + 0.05; none of 8: p = 1/10 -> 0.14
    w = level_weights({1: (8, 8), 2: (0, 8)}, levels=3)
    raw = [0.30, 0.14, 0.14]
    assert w == pytest.approx([r / sum(raw) for r in raw])
    assert level_weights({0: (4, 8), 1: (8, 8)}, levels=2)[0] > level_weights({0: (4, 8), 1: (8, 8)}, levels=2)[1]
    assert sum(level_weights({}, levels=4)) == pytest.approx(1.0)
