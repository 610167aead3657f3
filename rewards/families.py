"""Procedural task families with a difficulty knob (issue 19 item 5): fresh verifiable tasks without end.

Each family turns (difficulty, a seeded random generator) into one function task: a prompt whose comment
states what to compute, a C++ reference, and assert tests whose expected values are computed here in Python
(never by running the reference). Instances are identified by their content (`proc/FAMILY/dLEVEL/HASH`), so
the same instance drawn twice is one task, and the held-out split (configs.base.TaskSplit, by id) keeps
train and evaluation instances disjoint by construction.

`level_weights` is the online difficulty selection: prefer levels whose recent pass rate is neither 0 nor 1
(GRPO learns nothing from a group whose rewards are all equal).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from rewards.types import Task

TESTS_PER_TASK = 5


@dataclass(frozen=True)
class Spec:
    """One instance before rendering: what the prompt says, the C++ signature and body, and the test calls."""

    doc: str
    signature: str  # e.g. "long long affine(long long a, long long b)"
    body: str  # the reference body, without the closing brace
    calls: tuple[tuple[str, str], ...]  # (C++ call, C++ expected value)


def _affine(rng: random.Random, level: int) -> Spec:
    """level 0: a + k; 1: c1*a + c2*b; 2: adds a constant and a product term; 3: and the result modulo m."""
    c1, c2, k, m = rng.randint(2, 9), rng.randint(-9, -2), rng.randint(1, 20), rng.randint(5, 13)
    terms = {0: f"a + {k}", 1: f"{c1} * a + ({c2}) * b", 2: f"{c1} * a + ({c2}) * b + a * b + {k}",
             3: f"(({c1} * a + ({c2}) * b + a * b + {k}) % {m} + {m}) % {m}"}[min(level, 3)]

    def value(a: int, b: int) -> int:
        base = {0: a + k, 1: c1 * a + c2 * b, 2: c1 * a + c2 * b + a * b + k}.get(min(level, 3))
        return base if base is not None else (c1 * a + c2 * b + a * b + k) % m

    args = [(rng.randint(-50, 50), rng.randint(-50, 50)) for _ in range(TESTS_PER_TASK)]
    return Spec(f"Return {terms}.", "long long compute(long long a, long long b)", f"    return {terms};\n",
                tuple((f"compute({a}, {b})", f"{value(a, b)}LL") for a, b in args))


def _array(rng: random.Random, level: int) -> Spec:
    """level 0: the sum; 1: the sum of elements above a threshold; 2: the count of even elements above it;
    3: the largest element above it, or a sentinel when there is none."""
    t = rng.randint(-5, 5)
    docs = {0: "Return the sum of the elements of v.",
            1: f"Return the sum of the elements of v that are greater than {t}.",
            2: f"Return how many elements of v are even and greater than {t}.",
            3: f"Return the largest element of v that is greater than {t}, or -1000 if there is none."}
    bodies = {0: "    long long s = 0;\n    for (int x : v) s += x;\n    return s;\n",
              1: f"    long long s = 0;\n    for (int x : v) if (x > {t}) s += x;\n    return s;\n",
              2: f"    long long n = 0;\n    for (int x : v) if (x % 2 == 0 && x > {t}) n++;\n    return n;\n",
              3: f"    long long best = -1000;\n    for (int x : v) if (x > {t} && x > best) best = x;\n"
                 "    return best;\n"}
    level = min(level, 3)

    def value(v: list[int]) -> int:
        above = [x for x in v if x > t]
        return {0: sum(v), 1: sum(above), 2: sum(1 for x in above if x % 2 == 0),
                3: max(above, default=-1000)}[level]

    cases = [[rng.randint(-20, 20) for _ in range(rng.randint(0, 7))] for _ in range(TESTS_PER_TASK)]
    return Spec(docs[level], "long long compute(const std::vector<int>& v)", bodies[level],
                tuple((f"compute({{{', '.join(map(str, v))}}})", f"{value(v)}LL") for v in cases))


def _string(rng: random.Random, level: int) -> Spec:
    """level 0: count a character; 1: replace one character by another; 2: reverse, then replace;
    3: keep only the characters at even positions of the reversed, replaced string."""
    letters = "abcde"
    c, d = rng.sample(letters, 2)
    docs = {0: f"Return how many times the character '{c}' occurs in s.",
            1: f"Return s with every '{c}' replaced by '{d}'.",
            2: f"Return s reversed, with every '{c}' replaced by '{d}'.",
            3: f"Reverse s, replace every '{c}' by '{d}', and return the characters at even positions "
               "(0, 2, 4, ...) of the result."}
    level = min(level, 3)
    rev = "    std::string r(s.rbegin(), s.rend());\n"
    repl = f"    for (char& ch : r) if (ch == '{c}') ch = '{d}';\n"
    bodies = {0: f"    long long n = 0;\n    for (char ch : s) if (ch == '{c}') n++;\n    return n;\n",
              1: "    std::string r = s;\n" + repl + "    return r;\n",
              2: rev + repl + "    return r;\n",
              3: rev + repl + "    std::string out;\n    for (size_t i = 0; i < r.size(); i += 2) out += r[i];\n"
                 "    return out;\n"}

    def value(s: str) -> str:
        if level == 0:
            return str(s.count(c))
        r = (s[::-1] if level >= 2 else s).replace(c, d)
        return r[::2] if level == 3 else r

    words = ["".join(rng.choice(letters) for _ in range(rng.randint(0, 8))) for _ in range(TESTS_PER_TASK)]
    result = "long long" if level == 0 else "std::string"
    return Spec(docs[level], f"{result} compute(const std::string& s)", bodies[level],
                tuple((f'compute("{w}")', f"{value(w)}LL" if level == 0 else f'std::string("{value(w)}")')
                      for w in words))


FAMILIES: dict[str, Callable[[random.Random, int], Spec]] = {"affine": _affine, "array": _array, "string": _string}
LEVELS = 4
_INCLUDES = "#include <string>\n#include <vector>\n"


def instance(family: str, level: int, rng: random.Random) -> Task:
    """One task of `family` at difficulty `level` (0 .. LEVELS-1), drawn with `rng`."""
    if family not in FAMILIES:
        raise ValueError(f"unknown task family {family!r} (known: {', '.join(FAMILIES)})")
    if not 0 <= level < LEVELS:
        raise ValueError(f"difficulty level {level} outside 0..{LEVELS - 1}")
    spec = FAMILIES[family](rng, level)
    digest = hashlib.sha256(json.dumps([family, level, spec.doc, spec.calls]).encode()).hexdigest()[:12]
    prompt = f"{_INCLUDES}/* {spec.doc} */\n{spec.signature} {{\n"
    tests = "#include <cassert>\nint main() {\n" + "".join(
        f"    assert({call} == {expected});\n" for call, expected in spec.calls) + "}\n"
    return Task(task_id=f"proc/{family}/d{level}/{digest}", kind="function", prompt=prompt, tests=tests,
                reference=spec.body + "}\n", entry_point="compute", tier=level, source=f"procedural:{family}")


def generate(families: list[str], levels: list[int], per_level: int, seed: int = 0) -> Iterator[Task]:
    """`per_level` distinct instances for each family and level, deterministic in `seed` (a draw that repeats
    an instance is skipped, up to 20 x per_level draws)."""
    for family in families:
        for level in levels:
            rng = random.Random(f"{seed}:{family}:{level}")
            seen: set[str] = set()
            for _ in range(20 * per_level):
                task = instance(family, level, rng)
                if task.task_id not in seen:
                    seen.add(task.task_id)
                    yield task
                if len(seen) == per_level:
                    break


def task_row(task: Task) -> dict:
    """One task as a row of our task format (rewards.task_schema)."""
    return {"task_id": task.task_id, "kind": task.kind, "prompt": task.prompt, "tests": task.tests,
            "reference": task.reference, "entry_point": task.entry_point, "tier": task.tier, "source": task.source}


def level_weights(stats: dict[int, tuple[int, int]], levels: int = LEVELS, floor: float = 0.05) -> list[float]:
    """Sampling weights over difficulty levels from recent (passes, samples) per level: p(1 - p) with the
    pass rate p smoothed by one pass and one failure (an unseen level counts as p = 0.5, the most useful),
    plus a `floor` so no level is starved; normalised to sum to 1."""
    raw = []
    for level in range(levels):
        passes, total = stats.get(level, (0, 0))
        p = (passes + 1) / (total + 2)
        raw.append(p * (1 - p) + floor)
    norm = sum(raw)
    return [w / norm for w in raw]
