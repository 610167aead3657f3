"""Repair tasks from synthetic bugs, through the real sandbox: every kept bug fails its tests (the buggy program
given as the answer fails), every reference answer passes, the debug state is what the run showed, a bug
the sanitizer finds is located at its line, and the CLI writes task rows every stage loads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rewards.repair import build_repair_cases, task_row
from rewards.scorer import Scorer, canonical_items
from rewards.tasks import load_tasks, task_from_row
from rewards.types import StdioCase, Task

REPO = Path(__file__).resolve().parents[3]
SUM = Task(task_id="rep/sum", kind="function", entry_point="sum_all",
           prompt="#include <vector>\n/* Sum of all elements of v. */\nint sum_all(const std::vector<int>& v) {\n",
           tests="#include <cassert>\nint main() {\n  assert(sum_all({1, 2, 3}) == 6);\n  assert(sum_all({}) == 0);\n"
                 "  assert(sum_all({-4}) == -4);\n}\n",
           reference="  int s = 0;\n  for (std::size_t i = 0; i < v.size(); i++) s += v[i];\n  return s;\n}\n")
MAX = Task(task_id="rep/max", kind="stdio", prompt="#include <cstdio>\n",
           cases=(StdioCase("3 9\n", "9\n"), StdioCase("7 -2\n", "7\n"), StdioCase("5 5\n", "5\n")),
           reference="int main() { int a, b; scanf(\"%d %d\", &a, &b); printf(\"%d\\n\", a > b ? a : b); }\n")


@pytest.fixture
def pool(backend, make_pool):
    return make_pool(backend)


def test_kept_bugs_fail_references_pass_and_the_state_is_observed(pool):
    cases, counts = build_repair_cases([SUM, MAX], pool, per_task=4, tries_per_task=12)
    assert {c.original.task_id for c in cases} == {"rep/sum", "rep/max"} and counts["kept"] == len(cases)
    loaded = [task_from_row(json.loads(json.dumps(task_row(c))), f"row {i}") for i, c in enumerate(cases)]
    scorer = Scorer(pool)
    answers = scorer.score(canonical_items(loaded))
    assert [a.passed for a in answers] == [True] * len(cases), [a.detail for a in answers if not a.passed]
    buggy = scorer.score([(t, c.buggy if t.cases else c.buggy[len(c.original.preamble):]) for t, c in
                          zip(loaded, cases)])
    assert not any(b.passed for b in buggy), [c.mutant.description for c, b in zip(cases, buggy) if b.passed]
    for case, bug in zip(cases, buggy):
        assert case.state.verdict == bug.verdict, (case.task.task_id, case.state, bug.verdict)
        assert case.task.prompt.startswith("// TASK: Fix the bug in ") and case.state.render() in case.task.prompt
        assert case.task.reference.startswith("/* REASONING:\n") and case.mutant.before in case.task.reference
        assert case.task.task_id.startswith(case.original.task_id + "/repair-")
    # reading one past the end of v (off-by-one in the bound) is caught by AddressSanitizer, at the loop's line
    overread = [c for c in cases if c.original.task_id == SUM.task_id and c.mutant.operator == "off-by-one"]
    assert overread, [c.mutant.description for c in cases]
    state = overread[0].state
    assert "heap-buffer-overflow" in state.sanitizer or "index" in state.sanitizer, state
    assert "at line 5 in sum_all" in state.sanitizer, state  # line 5 of the shown program
    assert "Line 5 (in `sum_all`): the loop bound" in overread[0].answer


def test_a_task_whose_reference_fails_gives_no_repair_task(pool):
    broken = Task(**{**SUM.__dict__, "task_id": "rep/broken",
                     "reference": SUM.reference.replace("std::size_t", "size_t")})  # ::size_t: not declared
    cases, counts = build_repair_cases([broken], pool, per_task=2, tries_per_task=4)
    assert cases == [] and counts["reference_fails"] == 1


def test_cli_writes_rows_and_sft_samples(tmp_path, backend):
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(json.dumps({"task_id": t.task_id, "prompt": t.prompt, "reference": t.reference,
                                         **({"tests": t.tests} if t.tests else
                                            {"cases": [c.__dict__ for c in t.cases]})}) + "\n"
                             for t in (SUM, MAX)))
    out, sft = tmp_path / "repair.jsonl", tmp_path / "sft.jsonl"
    proc = subprocess.run([sys.executable, "-m", "rewards", "repair", "--tasks", str(tasks), "--out", str(out),
                           "--sft-out", str(sft), "--backend", backend, "--workers", "2", "--include-heldout"],
                          capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    rows = load_tasks(out)
    assert summary["kept"] == len(rows) > 0 and all(t.kind == "repair" for t in rows)
    samples = [json.loads(line) for line in sft.read_text().splitlines()]
    assert [s["instruction"] for s in samples] == [t.prompt for t in rows]
    assert all(s["kind"] == "repair" and s["output"].startswith("/* REASONING:") for s in samples)

    from sft.dataset import DataConfig, collect_samples

    collected = collect_samples(DataConfig(kinds=["repair"], repair_tasks=[str(out)], include_heldout_tasks=True))
    assert sorted(s.instruction for s in collected) == sorted(t.prompt for t in rows)
