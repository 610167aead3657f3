"""Agreement with the official harnesses: labelled cases built from public data, judged both ways.

Each case is one raw model text for one task, in a variant that has broken harnesses before (a reference
solution as the model would write it, trailing text after the function, a continuation cut at a stop
string, CRLF line ends, a comment at the very end, a wrong answer that compiles). The official verdict
comes from the program the official harness assembles (rewards/official.py), compiled with its flags and
run in the same sandbox: it passes when it exits 0. Crucible's verdict comes from the scorer. The two must
agree on pass/fail, and where the official program compiles but fails, Crucible must say WRONG_ANSWER
(failed asserts), not COMPILE_ERROR.

MultiPL-E ships no reference solutions, so a correct-by-construction one is built from each task's own
tests: a body that returns each assert's expected value for that assert's arguments (`lookup`); `wrong`
returns the first assert's expected value from a different assert. Tasks whose asserts are not all of the
form `candidate(ARGS) == EXPECTED` get no lookup cases.

    .venv/bin/python bench/rewards_agreement.py --every 4      # the sampled run, counts per format/variant
"""

from __future__ import annotations

import gzip
import json
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from rewards.extract import cut_at_stop
from rewards.official import (MULTIPL_E_FLAGS_OFFICIAL, humaneval_x_flags, humaneval_x_generation,
                              humaneval_x_program, multipl_e_completion, multipl_e_program)
from rewards.tasks import FINAL_SIGNATURE, humaneval_x, multipl_e
from rewards.types import Task
from sandbox.types import Job, TestCase, Verdict

JUNK = "\n\nint main() {\n    return 1;\n}\n"  # what a base model writes after the function


@dataclass(frozen=True)
class Case:
    fmt: str
    variant: str
    task: Task
    text: str  # the raw model text Crucible scores
    official_program: str
    official_flags: tuple[str, ...]
    expect_pass: bool | None  # by construction; None: no claim (the official verdict is the label)


def read_rows(path: str | Path) -> list[dict]:
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt") as f:
        return [json.loads(line) for line in f if line.strip()]


# ---------------------------------------------------------------------------------------------- HumanEval-X
def humaneval_x_cases(rows: list[dict]) -> list[Case]:
    cases = []
    for row in rows:
        task = humaneval_x(row, row["task_id"])
        flags = humaneval_x_flags(row)

        def case(variant: str, text: str, official_text: str | None = None, expect: bool | None = None) -> Case:
            generation = humaneval_x_generation(text if official_text is None else official_text)
            return Case("humaneval-x", variant, task, text, humaneval_x_program(row, generation), flags, expect)

        canonical = row["canonical_solution"]
        cases.append(case("canonical", canonical, expect=True))
        cases.append(case("canonical+trailing", canonical + JUNK, expect=True))
        cut = cut_at_stop(canonical + JUNK, ("\n}\n",))
        if cut.rstrip() + "\n}" == canonical.rstrip():  # the stop string took exactly the function's brace
            # Generated with stop "\n}\n" and the stop left out: the official generator would have kept the
            # brace, so the official label is the canonical text's.
            cases.append(case("stop-cut", cut, official_text=canonical, expect=True))
        cases.append(case("crlf", canonical.replace("\n", "\r\n"), expect=True))
        cases.append(case("wrong-return", "    return {};\n}\n"))
    return cases


# ------------------------------------------------------------------------------------------------ MultiPL-E
def _matching(text: str, open_at: int) -> int:
    """Index of the `)` closing the `(` at `open_at` (string and char literals skipped), or -1."""
    depth, i, quote = 0, open_at, ""
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


def candidate_asserts(tests: str) -> list[tuple[str, str]] | None:
    """[(args, expected)] of every `assert(candidate(ARGS) == EXPECTED)`, or None if any assert differs."""
    out = []
    start = 0
    while (at := tests.find("assert(", start)) >= 0:
        close = _matching(tests, at + len("assert"))
        inner = tests[at + len("assert("):close].strip()
        start = close + 1
        if close < 0 or not inner.startswith("candidate("):
            return None
        call_end = _matching(inner, len("candidate"))
        rest = inner[call_end + 1:].strip()
        if call_end < 0 or not rest.startswith("=="):
            return None
        out.append((inner[len("candidate("):call_end], rest[2:].strip()))
    return out or None


def parameter_names(prompt: str) -> list[str] | None:
    match = FINAL_SIGNATURE.search(prompt.rstrip())
    if not match:
        return None
    params = match.group("head")
    params = params[params.index("(", params.index(match.group("name"))) + 1: params.rindex(")")]
    names, depth, current = [], 0, ""
    for ch in params + ",":
        if ch == "," and depth == 0:
            if current.strip():
                names.append(current.strip().split()[-1].lstrip("&*"))
            current = ""
            continue
        depth += ch == "<"
        depth -= ch == ">"
        current += ch
    return names


def lookup_body(names: list[str], table: list[tuple[str, str]]) -> str:
    key = f"std::make_tuple({', '.join(names)})"
    lines = [f"    if ({key} == std::make_tuple({args})) return {expected};" if names else f"    return {expected};"
             for args, expected in table]
    return "\n".join(lines) + "\n    return {};"


def multipl_e_cases(rows: list[dict], fmt: str = "multipl-e") -> list[Case]:
    cases = []
    for row in rows:
        task = multipl_e(row, row["name"])
        table, names = candidate_asserts(row["tests"]), parameter_names(row["prompt"])
        stops = row["stop_tokens"]

        def case(variant: str, text: str, expect: bool | None) -> Case:
            program = multipl_e_program(row, multipl_e_completion(text, stops))
            return Case(fmt, variant, task, text, program, MULTIPL_E_FLAGS_OFFICIAL, expect)

        cases.append(case("default-return", "    return {};\n}\n", None))
        if table is None or names is None:
            continue
        body = lookup_body(names, table)
        cases.append(case("lookup", body + "\n}\n" + JUNK, True))
        cases.append(case("lookup-comment-end", body + "  // done", True))
        cases.append(case("lookup-crlf", (body + "\n}\n").replace("\n", "\r\n"), True))
        others = [e for _, e in table if e != table[0][1]]
        if others:
            cases.append(case("wrong-lookup", lookup_body(names, [(table[0][0], others[0])] + table[1:]) + "\n}\n",
                              None))
    return cases


# ---------------------------------------------------------------------------------------------------- judge
@dataclass(frozen=True)
class Outcome:
    case: Case
    official_pass: bool
    official_compiled: bool
    crucible_pass: bool
    crucible_verdict: str
    detail: str

    @property
    def agrees(self) -> bool:
        return self.official_pass == self.crucible_pass

    @property
    def fails_by_assert(self) -> bool:
        """Where the official program compiles and fails, Crucible must fail it at run time, not compile."""
        return self.official_pass or not self.official_compiled or self.crucible_verdict != "COMPILE_ERROR"


def judge(cases: list[Case], pool, progress: bool = False) -> list[Outcome]:
    from rewards.scorer import Scorer

    official = pool.run_batch([Job({"main.cpp": c.official_program}, flags=c.official_flags, tests=(TestCase(),))
                               for c in cases], progress=progress)
    ours = Scorer(pool).score([(c.task, c.text) for c in cases], progress=progress)
    return [Outcome(c, o.verdict is Verdict.OK, o.verdict is not Verdict.COMPILE_ERROR, s.passed, s.verdict, s.detail)
            for c, o, s in zip(cases, official, ours)]


def report(outcomes: list[Outcome]) -> dict:
    """Counts per format and variant: cases, agreements, official and Crucible passes, and the disagreements."""
    table: dict[str, Counter] = defaultdict(Counter)
    for o in outcomes:
        row = table[f"{o.case.fmt}/{o.case.variant}"]
        row["cases"] += 1
        row["agree"] += o.agrees
        row["official_pass"] += o.official_pass
        row["crucible_pass"] += o.crucible_pass
        row["compile_error_instead_of_assert"] += not o.fails_by_assert
        if o.case.expect_pass is not None:
            row["label_mismatch"] += o.official_pass != o.case.expect_pass
    disagreements = [{"task_id": o.case.task.task_id, "format": o.case.fmt, "variant": o.case.variant,
                      "official_pass": o.official_pass, "crucible": o.crucible_verdict, "detail": o.detail[:300]}
                     for o in outcomes if not o.agrees or not o.fails_by_assert]
    total = len(outcomes)
    return {"cases": total, "agree": sum(o.agrees for o in outcomes),
            "agreement": round(sum(o.agrees for o in outcomes) / total, 4) if total else None,
            "per_variant": {k: dict(v) for k, v in sorted(table.items())}, "disagreements": disagreements}
