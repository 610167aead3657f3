"""HumanEval-X C++ through the tamper-proof harness, with no side door: every canonical solution, given as
an ordinary raw completion (the model's continuation, ending with the function's closing brace, cut the way
HumanEval-X's own generator cuts it), passes; and a body replaced by a wrong `return {};` fails by its
asserts (WRONG_ANSWER), not by a compile error. All 164 tasks, half on Docker and the other half on bubblewrap
(the harness is the same on both; the backends' equivalence is covered by the sandbox tests)."""

from __future__ import annotations

import pytest

from rewards.scorer import Scorer
from rewards.tasks import load_tasks
from tests.conftest import HUMANEVAL_X

pytestmark = pytest.mark.slow
# CPP/23's tests call `strlen("x")`: with the <cstring> the official harness adds, that resolves to libc's
# strlen(const char*), not the task's strlen(string), so every completion passes, officially and here.
VACUOUS = {"CPP/23"}


@pytest.fixture(scope="module")
def tasks():
    if not HUMANEVAL_X.exists():
        pytest.skip(f"{HUMANEVAL_X} not present")
    return load_tasks(HUMANEVAL_X)


def test_all_canonical_pass_and_wrong_returns_fail_by_assert(backend, make_pool, tasks):
    assert len(tasks) == 164
    tasks = tasks[0::2] if backend == "docker" else tasks[1::2]  # together: every task once
    scorer = Scorer(make_pool(backend))
    right = scorer.score([(t, t.reference) for t in tasks])  # raw completions, extraction applied
    failures = [(s.task_id, s.verdict, s.detail) for s in right if not s.passed]
    assert not failures, failures[:5]
    assert all(s.tests_passed == s.tests_total > 0 for s in right)
    assert min(s.reward for s in right) >= 6.0  # compiles (+1) and every assert (+5)
    wrong = scorer.score([(t, "    return {};\n}\n") for t in tasks])
    assert {s.task_id for s in wrong if s.passed} == VACUOUS & {t.task_id for t in tasks}
    assert all(w.reward < r.reward for w, r in zip(wrong, right) if w.task_id not in VACUOUS)
    # `return {};` compiles for every return type in HumanEval-X: the tests decide at run time (failed
    # asserts, or CPP/137's any_cast of an empty boost::any throwing), and the detail says which assert
    at_compile = [(s.task_id, s.detail[:120]) for s in wrong if s.verdict == "COMPILE_ERROR"]
    assert not at_compile, at_compile[:5]
    assert {s.verdict for s in wrong if s.task_id not in VACUOUS} <= {"WRONG_ANSWER", "RUNTIME_ERROR"}
    assert all("asserts passed" in s.detail and ("failed #" in s.detail or "not reached #" in s.detail)
               for s in wrong if s.task_id not in VACUOUS)
