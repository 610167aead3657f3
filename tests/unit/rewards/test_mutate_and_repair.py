"""Synthetic bugs (rewards.mutate) and the repair records built from them (rewards.repair), against hand values."""

from __future__ import annotations

import pytest

from configs.base import TaskSplit, origin_task_id
from rewards.mutate import OPERATORS, mutants
from rewards.repair import DebugState, debug_state, fixed_code, reasoning, repair_prompt, summary_of
from rewards.scorer import as_scored
from rewards.types import ScoredSample, StdioCase, Task

HEAD = "#include <vector>\nint f(const std::vector<int>& v, int n) {\n"
BODY = """  int s = 0;
  for (int i = 0; i < n; i++) { if (v[i] < 0) continue; s += v[i] * 2; }
  if (n == 0) return -1;
  bool big = std::max(s, n) > 3;
  if (big) return true;
  return 0;
}
"""


def by_operator(source: str, start: int) -> dict[str, list]:
    found: dict[str, list] = {}
    for m in mutants(source, start):
        found.setdefault(m.operator, []).append(m)
    return found


def test_each_operator_makes_its_edit_at_its_line():
    found = by_operator(HEAD + BODY, len(HEAD))
    assert set(found) == set(OPERATORS)
    edits = {(m.operator, m.line, m.before, m.after) for ms in found.values() for m in ms}
    assert ("off-by-one", 2, "<", "<=") in edits  # the loop bound, not the `v[i] < 0` test
    assert ("flipped-comparison", 2, "<", ">=") in edits and ("flipped-comparison", 3, "==", "!=") in edits
    assert ("wrong-operator", 2, "*", "+") in edits
    assert ("missing-check", 3, "if (n == 0) return -1;", "") in edits
    assert ("uninitialised", 1, "s = 0", "s") in edits
    assert ("wrong-return", 5, "true", "false") in edits and ("wrong-return", 6, "0", "1") in edits
    assert ("swapped-arguments", 4, "s, n", "n, s") in edits
    m = next(m for m in found["missing-check"] if m.line == 3)
    assert m.text == HEAD + BODY.replace("if (n == 0) return -1;", "")
    assert m.description == "line 3: the guard `if (n == 0) return -1;` is missing, so that case falls through"


def test_only_the_completion_is_mutated_and_nothing_twice():
    ms = mutants(HEAD + BODY, len(HEAD))
    assert all(m.text.startswith(HEAD) for m in ms)
    assert len({m.text for m in ms}) == len(ms) and HEAD + BODY not in {m.text for m in ms}
    assert mutants(HEAD + BODY, len(HEAD + BODY)) == []
    assert mutants("int f( { return 1 +;", 0) == []  # a parse error: no mutant


def test_debug_state_renders_the_designs_block_from_what_ran():
    sample = ScoredSample("t", "", False, "RUNTIME_ERROR", 1, 3, 1.0, detail=(
        "UndefinedBehaviorSanitizer: signed-integer-overflow at solution.cpp:7 in f(int); 1/3 asserts passed; "
        "failed #2 `assert(f(2)==4);`; stderr 'solution.cpp:7:5: runtime error: signed integer overflow'"),
        sanitizer={"tool": "UndefinedBehaviorSanitizer", "kind": "signed-integer-overflow", "message": "", "file":
                   "solution.cpp", "line": 7, "function": "f(int)"})
    state = debug_state(sample, head_lines=2)
    assert state == DebugState("RUNTIME_ERROR", "", "UndefinedBehaviorSanitizer: signed-integer-overflow at line 7 "
                               "in f(int)", "1/3 asserts passed; failed #2 `assert(f(2)==4);`",
                               "signed-integer-overflow")
    assert state.render() == ("struct DebugState {\n  // verdict: RUNTIME_ERROR\n  // sanitizer: "
                              "UndefinedBehaviorSanitizer: signed-integer-overflow at line 7 in f(int)\n"
                              "  // tests: 1/3 asserts passed; failed #2 `assert(f(2)==4);`\n};")
    assert summary_of(state) == "signed-integer-overflow found by the sanitizer"
    warned = ScoredSample("t", "", False, "WRONG_ANSWER", 0, 3, 1.0, detail="0/3 asserts passed; 1 warning(s) in the "
                          "completion, first: completion:1:5: warning: unused variable 'x'")
    assert debug_state(warned, head_lines=2).tests == "0/3 asserts passed"
    compile_error = ScoredSample("t", "", False, "COMPILE_ERROR", 0, 3, -1.0,
                                 diagnostics="completion:2:9: error: 'x' was not declared in this scope\n")
    state = debug_state(compile_error, head_lines=2)
    assert state.compiler == "line 4:9: error: 'x' was not declared in this scope" and state.tests == ""
    assert summary_of(state) == "it does not compile"


def test_reasoning_fixed_code_and_prompt():
    task = Task("t", "function", HEAD, tests="int main(){}", reference=BODY, entry_point="f")
    m = next(m for m in mutants(HEAD + BODY, len(HEAD)) if m.operator == "off-by-one")
    state = DebugState("RUNTIME_ERROR", tests="1/3 asserts passed")
    assert reasoning(m, state, "f", 2) == (
        "/* REASONING:\n   The program runs but 1/3 asserts passed.\n   Line 4 (in `f`): the loop bound `i < n` uses "
        "`<=` instead of `<`, one iteration off.\n   Change `<=` back to `<`.\n*/\n")
    assert fixed_code(task) == "int f(const std::vector<int>& v, int n) {\n" + BODY
    prompt = repair_prompt(task, state, m.text)
    assert prompt.startswith("// TASK: Fix the bug in `f` (its tests fail: RUNTIME_ERROR)\nstruct DebugState {\n")
    assert prompt.endswith(m.text)


def test_repair_tasks_are_scored_as_the_fixed_function_or_program():
    fn = Task("t/repair-1", "repair", "// TASK ...", tests="int main(){}", base_prompt=HEAD, entry_point="f")
    scored, mode = as_scored(fn, "raw")
    assert (scored.kind, scored.prompt, mode) == ("function", HEAD, "chat")
    io = Task("s/repair-1", "repair", "// TASK ...", cases=(StdioCase("1", "1"),))
    scored, mode = as_scored(io, "raw")
    assert (scored.kind, scored.prompt, mode) == ("stdio", "", "raw")
    with pytest.raises(ValueError, match="kind=repair needs"):
        Task("x", "repair", "// TASK", tests="int main(){}")  # tests without the base prompt


def test_a_repair_task_is_on_its_origins_side_of_the_split():
    split = TaskSplit(heldout_fraction=0.5)
    ids = [f"crucible/t{i}" for i in range(40)]
    assert origin_task_id("crucible/t3/repair-12") == "crucible/t3" and origin_task_id("a/b") == "a/b"
    assert all(split.is_heldout(f"{i}/repair-1") == split.is_heldout(i) for i in ids)
    assert {split.is_heldout(i) for i in ids} == {True, False}
