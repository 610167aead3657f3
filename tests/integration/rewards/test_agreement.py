"""The agreement suite (rewards/agreement.py) on a fixed sample of public data: Crucible's pass/fail equals
the official harness's (its own assembled program, flags and exit status, run in the same sandbox) for
reference solutions written as a model writes them, text after the function, continuations cut at a stop
string, CRLF, comments at the very end, and wrong answers; and a wrong answer that compiles fails by its
asserts, never by a compile error. The full run is `bench/rewards_agreement.py` (counts in
docs/benchmarks.md)."""

from __future__ import annotations

import pytest

from rewards.agreement import humaneval_x_cases, judge, multipl_e_cases, read_rows, report
from tests.conftest import HUMANEVAL_X, MULTIPL_E, backend_skip_reason

pytestmark = pytest.mark.slow

# CPP/38 and CPP/50 call a helper the prompt defines; CPP/162 links OpenSSL; the others are ordinary.
HUMANEVAL_X_SAMPLE = ("CPP/0", "CPP/38", "CPP/50", "CPP/162")
MULTIPL_E_SAMPLE = ("HumanEval_0_has_close_elements", "HumanEval_12_longest", "HumanEval_107_even_odd_palindrome")
MBPP_SAMPLE = 3  # the first rows of the MBPP translation


def test_crucible_agrees_with_the_official_harnesses(make_pool):
    for path in (HUMANEVAL_X, MULTIPL_E / "humaneval-cpp.jsonl.gz", MULTIPL_E / "mbpp-cpp.jsonl.gz"):
        if not path.exists():
            pytest.skip(f"{path} not present")
    backend = "docker" if backend_skip_reason("docker") is None else "bwrap"
    he = [r for r in read_rows(HUMANEVAL_X) if r["task_id"] in HUMANEVAL_X_SAMPLE]
    mpe = [r for r in read_rows(MULTIPL_E / "humaneval-cpp.jsonl.gz") if r["name"] in MULTIPL_E_SAMPLE]
    mbpp = read_rows(MULTIPL_E / "mbpp-cpp.jsonl.gz")[:MBPP_SAMPLE]
    assert (len(he), len(mpe)) == (len(HUMANEVAL_X_SAMPLE), len(MULTIPL_E_SAMPLE))
    cases = (humaneval_x_cases(he) + multipl_e_cases(mpe, "multipl-e-humaneval")
             + multipl_e_cases(mbpp, "multipl-e-mbpp"))
    result = report(judge(cases, make_pool(backend)))
    assert not result["disagreements"], result["disagreements"]
    per_variant = result["per_variant"]
    # every variant ran, and the by-construction labels held under the official harness itself
    assert {"humaneval-x/canonical", "humaneval-x/stop-cut", "humaneval-x/crlf", "humaneval-x/wrong-return",
            "multipl-e-humaneval/lookup", "multipl-e-humaneval/lookup-comment-end", "multipl-e-humaneval/wrong-lookup",
            "multipl-e-mbpp/lookup-crlf"} <= per_variant.keys()
    assert per_variant["humaneval-x/canonical"]["crucible_pass"] == len(HUMANEVAL_X_SAMPLE)
    assert per_variant["multipl-e-humaneval/lookup-comment-end"]["crucible_pass"] == len(MULTIPL_E_SAMPLE)
    assert all(row.get("label_mismatch", 0) == 0 for row in per_variant.values()), per_variant
    # wrong answers that compile are failed by their asserts (the official program compiles and exits non-zero)
    wrong = per_variant["multipl-e-humaneval/wrong-lookup"]
    assert wrong["crucible_pass"] == 0 and wrong["compile_error_instead_of_assert"] == 0
