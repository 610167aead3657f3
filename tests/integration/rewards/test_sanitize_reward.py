"""`reward.weights.sanitize` end to end (Scorer -> sandbox -> reward): a completion whose undefined behaviour
the tests cannot see earns the full reward without sanitizers and loses it with them; the reference does not."""

from __future__ import annotations

import pytest

from rewards.reward import RewardConfig
from rewards.scorer import Scorer
from rewards.types import StdioCase, Task

SUM = Task(task_id="ub/sum", kind="function", entry_point="sum_first",
           prompt="#include <vector>\n/* Sum of the first n elements of v (n <= v.size()). */\n"
                  "int sum_first(const std::vector<int>& v, int n) {\n",
           tests="#include <cassert>\nint main() {\n  assert(sum_first({1, 2, 3}, 2) == 3);\n"
                 "  assert(sum_first({5}, 1) == 5);\n}\n",
           reference="  int s = 0;\n  for (int i = 0; i < n; i++) s += v[i];\n  return s;\n}\n")
# Reads one past the end (v.data()[n]) and throws it away: invisible to the tests, a heap-buffer-overflow.
OVERREAD = ("  int s = 0;\n  const int* p = v.data();\n  for (int i = 0; i <= n; i++) { int x = p[i];"
            " if (i < n) s += x; }\n  return s;\n}\n")
TWICE = Task(task_id="ub/twice", kind="stdio", prompt="#include <cstdio>\n",
             cases=(StdioCase("21\n", "42\n"), StdioCase("2147483647\n", "-2\n")),
             reference="int main() { unsigned x; scanf(\"%u\", &x); printf(\"%d\\n\", (int)(2u * x)); }\n")
# The same answers through signed overflow (wraps in practice at -O2 on x86, undefined by the standard).
OVERFLOW = "int main() { int x; scanf(\"%d\", &x); volatile int y = x; printf(\"%d\\n\", y + y); }\n"


@pytest.fixture
def pool(backend, make_pool):
    return make_pool(backend)


def test_undefined_behaviour_loses_the_reward_only_when_sanitized(pool):
    items = [(SUM, SUM.reference), (SUM, OVERREAD), (TWICE, TWICE.reference), (TWICE, OVERFLOW)]
    plain = Scorer(pool).score(items)
    sanitized = Scorer(pool, RewardConfig(sanitize=True)).score(items)
    assert [s.passed for s in plain] == [True] * 4, [s.detail for s in plain]
    assert plain[1].reward == plain[0].reward and plain[3].reward == plain[2].reward
    ref_sum, bad_sum, ref_twice, bad_twice = sanitized
    assert ref_sum.passed and ref_twice.passed and ref_sum.components["sanitizer"] == 0.0
    assert ref_sum.reward == plain[0].reward  # the clean reference keeps its full reward
    # the read past the end is on the completion's 3rd line; the overflowing sum on its 1st
    assert (bad_sum.sanitizer["completion_line"], bad_twice.sanitizer["completion_line"]) == (3, 1)
    for bad, before, kind in ((bad_sum, plain[1], {"heap-buffer-overflow", "object-size"}),
                              (bad_twice, plain[3], {"signed-integer-overflow"})):
        assert not bad.passed and bad.verdict == "RUNTIME_ERROR", bad.detail
        assert bad.components["sanitizer"] == -1.0 and bad.sanitizer["kind"] in kind, bad.sanitizer
        assert bad.sanitizer["file"] == "solution.cpp" and bad.sanitizer["kind"] in bad.detail
        assert bad.reward < before.reward
