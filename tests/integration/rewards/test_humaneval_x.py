"""HumanEval-X C++ through the tamper-proof harness: every canonical solution passes, and each canonical with
its body replaced by a wrong `return {};` fails. All 164 tasks on Docker; every 4th on bubblewrap (the harness
is the same on both; the backends' equivalence is covered by the sandbox tests), which saves a minute."""

from __future__ import annotations

import pytest

from rewards.scorer import Scorer, canonical_items
from rewards.tasks import load_tasks
from tests.conftest import HUMANEVAL_X

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tasks():
    if not HUMANEVAL_X.exists():
        pytest.skip(f"{HUMANEVAL_X} not present")
    return load_tasks(HUMANEVAL_X)


def test_all_canonical_pass_and_wrong_returns_fail(backend, make_pool, tasks):
    assert len(tasks) == 164
    tasks = tasks if backend == "docker" else tasks[::4]
    scorer = Scorer(make_pool(backend))
    right = scorer.score(canonical_items(tasks))
    failures = [(s.task_id, s.verdict, s.detail) for s in right if not s.passed]
    assert not failures, failures[:5]
    assert all(s.tests_passed == s.tests_total > 0 for s in right)
    assert min(s.reward for s in right) >= 6.0  # compiles (+1) and every assert (+5)
    wrong = scorer.score([(t, "    return {};\n}\n") for t in tasks])
    assert not [s.task_id for s in wrong if s.passed]
    assert all(w.reward < r.reward for w, r in zip(wrong, right))
