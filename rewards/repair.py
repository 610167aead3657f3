"""Repair tasks from synthetic bugs (issue 19): bug + debug state -> `/* REASONING */` + fix.

For each task with a reference solution: mutate the reference (rewards.mutate), run every mutant through the
real scorer (sandbox, tests, optionally sanitizers), and keep only mutants that fail. Each kept mutant
becomes a `kind: repair` task whose prompt is the design's input format

    // TASK: Fix the bug in `f` (its tests fail: RUNTIME_ERROR)
    struct DebugState {
      // verdict: RUNTIME_ERROR
      // sanitizer: AddressSanitizer: heap-buffer-overflow at line 7 in f(int)
      // tests: 1/3 asserts passed; failed #2 `assert (f(2) == 4);`
    };
    <the buggy program>

and whose reference answer is `/* REASONING: ... */` + the fixed function (or program). The debug state is
what the sandbox observed running the buggy code, never invented; the reasoning is built from what the
builder knows (the operator and the line it mutated, the failing case, the sanitizer's finding).
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace

from rewards.mutate import Mutant, mutants
from rewards.reward import RewardConfig
from rewards.scorer import Scorer
from rewards.tasks import FINAL_SIGNATURE
from rewards.types import ScoredSample, Task

STATE_LINE_CHARS = 300  # each debug-state line is cut to this many characters
_COMPLETION_LINE = re.compile(r"\bcompletion:(\d+):")


@dataclass(frozen=True)
class DebugState:
    """What the sandbox observed running the buggy program."""

    verdict: str
    compiler: str = ""  # the first compiler error, lines relative to the program shown
    sanitizer: str = ""  # the sanitizer's finding
    tests: str = ""  # the failing assert or stdio case (input, expected, got)
    sanitizer_kind: str = ""  # the finding's kind (heap-buffer-overflow, ...), for the task's one-line summary

    def render(self) -> str:
        """The design's `struct DebugState { ... };` block; every value a `//` comment line."""
        lines = ["struct DebugState {", f"  // verdict: {self.verdict}"]
        for name in ("compiler", "sanitizer", "tests"):
            value = " ".join(getattr(self, name).split())
            if value:
                lines.append(f"  // {name}: {value[:STATE_LINE_CHARS]}")
        return "\n".join(lines + ["};"])


@dataclass(frozen=True)
class RepairCase:
    task: Task  # kind="repair": prompt, tests/cases, reference = the answer below
    original: Task
    mutant: Mutant
    state: DebugState
    buggy: str  # the buggy program as shown in the prompt
    answer: str  # `/* REASONING: ... */` + the fixed function or program


def program_of(task: Task, completion: str) -> str:
    """The program a person reads: the task's head and the completion (what solution.cpp holds, line for line)."""
    return task.program_head + completion + task.completion_suffix


def debug_state(sample: ScoredSample, head_lines: int) -> DebugState:
    """From a scored sample of the buggy program. Locations become lines of the shown program (solution.cpp
    holds it line for line)."""
    def shown(match: re.Match) -> str:
        return f"line {head_lines + int(match.group(1))}:"

    compiler = next((line for line in sample.diagnostics.splitlines() if ": error:" in line), "")
    # the detail's note on the warnings bonus is about the reward, not the bug
    tests = "" if compiler else "; ".join(part for part in sample.detail.split("; ")
                                          if " warning(s) in the completion" not in part)
    sanitizer = ""
    finding = sample.sanitizer
    if finding:
        where = f" at line {finding['line']}" if finding["file"] == "solution.cpp" and finding["line"] else ""
        func = f" in {finding['function']}" if finding["function"] else ""
        sanitizer = f"{finding['tool']}: {finding['kind']}{where}{func}" + (
            f" ({finding['message']})" if finding["message"] else "")
        # the detail repeats the finding (and the report in the stderr head): keep what the tests add
        tests = "; ".join(part for part in tests.split("; ")
                          if finding["kind"] not in part and not part.startswith("stderr "))
    return DebugState(sample.verdict, _COMPLETION_LINE.sub(shown, compiler), sanitizer, tests,
                      finding["kind"] if finding else "")


def summary_of(state: DebugState) -> str:
    if state.compiler:
        return "it does not compile"
    if state.sanitizer_kind:
        return f"{state.sanitizer_kind} found by the sanitizer"
    return f"its tests fail: {state.verdict}"


def reasoning(mutant: Mutant, state: DebugState, entry: str, head_lines: int) -> str:
    """A REASONING text from what is known: the symptom, the faulty line and why, the fix."""
    line = head_lines + mutant.line
    symptom = (f"The compiler reports: {state.compiler}." if state.compiler else
               f"The sanitizer reports {state.sanitizer}." if state.sanitizer else
               f"The program runs but {state.tests or state.verdict}.")
    what = mutant.description.split(": ", 1)[1]
    fix = (f"Restore the guard `{mutant.before}`." if mutant.operator == "missing-check" else
           f"Initialise it again: `{mutant.before}`." if mutant.operator == "uninitialised" else
           f"Change `{mutant.after}` back to `{mutant.before}`.")
    where = f" (in `{entry}`)" if entry else ""
    return f"/* REASONING:\n   {symptom}\n   Line {line}{where}: {what}.\n   {fix}\n*/\n"


def fixed_code(task: Task) -> str:
    """The reference as an answer: the whole function (signature + reference body), or the whole program."""
    if task.kind == "stdio":
        return task.program_head + task.reference
    match = FINAL_SIGNATURE.search(task.prompt.rstrip())
    signature = task.prompt[match.start():] if match else task.prompt
    return signature + task.reference + task.completion_suffix


def repair_prompt(task: Task, state: DebugState, buggy: str) -> str:
    name = f"`{task.entry_point}`" if task.entry_point else "the program"
    return f"// TASK: Fix the bug in {name} ({summary_of(state)})\n{state.render()}\n{buggy.rstrip()}\n"


def candidates(task: Task, per_task: int, rng: random.Random) -> list[Mutant]:
    """Mutants of the reference, one operator at a time in turn, so a task's cases differ in kind."""
    found = mutants(program_of(task, task.reference), len(task.program_head))
    rng.shuffle(found)
    by_operator: dict[str, list[Mutant]] = {}
    for m in found:
        by_operator.setdefault(m.operator, []).append(m)
    order = []
    while any(by_operator.values()) and len(order) < per_task:
        for ms in by_operator.values():
            if ms and len(order) < per_task:
                order.append(ms.pop())
    return order


def build_repair_cases(tasks: Sequence[Task], pool, per_task: int = 2, tries_per_task: int = 8, seed: int = 0,
                       sanitize: bool = True, progress: bool = False) -> tuple[list[RepairCase], Counter]:
    """Up to `per_task` repair cases per task with a passing reference (function and stdio kinds), from up to
    `tries_per_task` mutants each, all scored in one batch. Returns the cases and counts (references that
    fail, mutants tried, kept, and dropped because they still pass, by operator)."""
    scorer = Scorer(pool, RewardConfig(sanitize=sanitize))
    usable = [replace(t, stop_tokens=()) for t in tasks if t.reference is not None and t.kind in ("function", "stdio")]
    # A mutant's failure says something only when the reference passes (under the same sanitizers).
    references = scorer.score([(t, t.reference) for t in usable], progress=progress)
    counts: Counter = Counter(reference_fails=sum(not s.passed for s in references))
    tried: list[tuple[Task, Mutant, str]] = []
    for task, ref in zip(usable, references):
        if not ref.passed:
            continue
        rng = random.Random(f"{seed}:{task.task_id}")
        for m in candidates(task, tries_per_task, rng):
            body = m.text[len(task.program_head):]
            if task.completion_suffix:
                body = body.removesuffix(task.completion_suffix)
            tried.append((task, m, body))
    scored = scorer.score([(t, body) for t, _, body in tried], progress=progress)
    counts["tried"] = len(tried)
    kept: dict[str, int] = Counter()
    cases = []
    for (task, m, body), sample in zip(tried, scored):
        if sample.reward is None:
            counts["unscored"] += 1
            continue
        if sample.passed:  # not a bug the tests can see (an equivalent mutant)
            counts[f"still_passes/{m.operator}"] += 1
            continue
        if kept[task.task_id] >= per_task:
            continue
        kept[task.task_id] += 1
        counts[f"kept/{m.operator}"] += 1
        head_lines = task.program_head.count("\n")
        state = debug_state(sample, head_lines)
        buggy = program_of(task, body)
        answer = reasoning(m, state, task.entry_point, head_lines) + fixed_code(task)
        repair = replace(task, task_id=f"{task.task_id}/repair-{kept[task.task_id]}", kind="repair",
                         prompt=repair_prompt(task, state, buggy), reference=answer, preamble="",
                         base_prompt=task.program_head if task.kind == "function" else "",
                         sanitize=sanitize,  # a bug the sanitizer found is verified with it
                         source=f"repair:{task.source or 'native'}", stop_tokens=())
        cases.append(RepairCase(repair, task, m, state, buggy, answer))
    counts["kept"] = len(cases)
    return cases, counts


def task_row(case: RepairCase) -> dict:
    """The repair task as a row of our task format (rewards.task_schema): loadable by every stage."""
    t = case.task
    row = {"task_id": t.task_id, "kind": "repair", "prompt": t.prompt, "reference": t.reference,
           "entry_point": t.entry_point, "flags": list(t.flags), "source": t.source}
    if t.cases:
        row["cases"] = [{"input": c.input, "output": c.output} for c in t.cases]
        row["checker"] = t.checker
    else:
        row["tests"] = t.tests
        row["base_prompt"] = t.base_prompt
    if t.sanitize:
        row["sanitize"] = True
    for name in ("tier", "time_limit_s", "memory_mb"):
        if getattr(t, name) is not None:
            row[name] = getattr(t, name)
    if t.link_flags:
        row["link_flags"] = list(t.link_flags)
    return row
