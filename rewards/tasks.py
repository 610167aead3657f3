"""Task loaders: HumanEval-X C++, MultiPL-E C++, our stdio/compile/function format, and the embedded set.

`load_tasks(path)` detects the format per record; bad records raise ValueError naming file, line and field.
The file format is documented in docs/tasks.md.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import yaml

from configs.loader import jsonl_rows
from rewards.harness import check_function_task
from rewards.types import StdioCase, Task

EMBEDDED_DIR = Path(__file__).with_name("data") / "embedded"  # one YAML file per tier, our own problems
# The last line of a prompt that opens the function to complete: `head` is that line, `name` the function.
FINAL_SIGNATURE = re.compile(r"(?P<head>[^\n;{}]*\b(?P<name>[A-Za-z_]\w*)\s*\([^()]*\)\s*\{\s*)$")


def _entry_point(prompt: str) -> str:
    match = FINAL_SIGNATURE.search(prompt.rstrip())
    return match.group("name") if match else ""


def _records(path: Path) -> Iterator[tuple[int, dict]]:
    if path.suffix in (".yaml", ".yml"):
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ValueError(f"{path}: invalid YAML: {exc}") from None
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a list of tasks")
        for i, row in enumerate(data, 1):
            yield i, row
        return
    yield from jsonl_rows(path)


def _require(row: dict, where: str, *fields: str) -> None:
    for name in fields:
        if not isinstance(row.get(name), str):
            raise ValueError(f"{where}: field {name!r} is missing or not a string")


# HumanEval-X's evaluator puts each of these lines that the prompt lacks before the prompt (its IMPORT_HELPER
# for C++), then compiles `helpers + "\n" + prompt + completion + "\n" + test`.
HUMANEVAL_X_INCLUDES = ("#include<stdlib.h>", "#include<algorithm>", "#include<math.h>", "#include<stdio.h>",
                        "#include<vector>", "#include<string>", "#include<climits>", "#include<cstring>",
                        "#include<iostream>")

# The compilers' flags of the official executors (no optimisation in either): CodeGeeX's execution.py runs
# `g++ -std=c++11 test.cpp [-lcrypto -lssl]`, MultiPL-E's C++ executor `g++ -std=c++17`.
HUMANEVAL_X_FLAGS = ("-std=c++11",)
MULTIPL_E_FLAGS = ("-std=c++17",)


def humaneval_x(row: dict, where: str) -> Task:
    _require(row, where, "task_id", "prompt", "canonical_solution", "test")
    preamble = "".join(line + "\n" for line in HUMANEVAL_X_INCLUDES if line not in row["prompt"]) + "\n"
    return Task(task_id=row["task_id"], kind="function", prompt=row["prompt"], tests=row["test"],
                reference=row["canonical_solution"], entry_point=_entry_point(row["prompt"]),
                stop_tokens=("\n}\n",), finish="close-function", preamble=preamble, flags=HUMANEVAL_X_FLAGS,
                link_flags=("-lcrypto",), source="humaneval-x")


_CLOSING_BRACE = re.compile(r"\s*\}")


def multipl_e(row: dict, where: str) -> Task:
    _require(row, where, "prompt", "tests")
    task_id = row.get("task_id") if isinstance(row.get("task_id"), str) else row.get("name")
    if not isinstance(task_id, str):
        raise ValueError(f"{where}: field 'name' is missing or not a string")
    # MultiPL-E compiles `prompt + completion + "\n" + tests`, its completions stop before "\n}" and its tests
    # start with the function's closing brace: "\n" and that brace become the completion's suffix.
    tests, suffix = row["tests"], "\n"
    brace = _CLOSING_BRACE.match(tests)
    if brace:
        suffix, tests = "\n" + brace.group(0), tests[brace.end():]
    stops = row.get("stop_tokens")
    if stops is not None and not (isinstance(stops, list) and all(isinstance(x, str) for x in stops)):
        raise ValueError(f"{where}: field 'stop_tokens' must be a list of strings")
    return Task(task_id=task_id, kind="function", prompt=row["prompt"], tests=tests,
                reference=row.get("canonical_solution"), entry_point=_entry_point(row["prompt"]),
                stop_tokens=tuple(stops or ()), completion_suffix=suffix, flags=MULTIPL_E_FLAGS, source="multipl-e")


def native(row: dict, where: str) -> Task:
    _require(row, where, "task_id", "prompt")
    kind = row.get("kind") or ("stdio" if "cases" in row else "function")
    cases = []
    for i, case in enumerate(row.get("cases") or []):
        if not isinstance(case, dict) or not isinstance(case.get("input"), str) or not isinstance(case.get("output"), str):
            raise ValueError(f"{where}: cases[{i}] needs string fields 'input' and 'output'")
        cases.append(StdioCase(case["input"], case["output"]))
    checker = row.get("checker", "tokens")
    if checker not in ("exact", "tokens", "float"):
        raise ValueError(f"{where}: field 'checker' must be exact, tokens or float, got {checker!r}")
    try:
        return Task(task_id=row["task_id"], kind=kind, prompt=row["prompt"], tests=row.get("tests") or "",
                    cases=tuple(cases), checker=checker, abs_tol=float(row.get("abs_tol", 1e-6)),
                    rel_tol=float(row.get("rel_tol", 1e-6)), reference=row.get("reference"),
                    entry_point=row.get("entry_point") or _entry_point(row["prompt"]),
                    stop_tokens=tuple(row.get("stop_tokens") or ()), tier=row.get("tier"),
                    flags=tuple(row.get("flags") or ("-std=c++17", "-O2")),
                    link_flags=tuple(row.get("link_flags") or ()), source=row.get("source", "native"))
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def _detect(row: dict, where: str) -> Task:
    """By the fields that define each format: HumanEval-X has `declaration` and `canonical_solution`;
    MultiPL-E has `tests` with `language` or `stop_tokens` and `name` (copies that add a `task_id`, such as
    DeepSeek-Coder's evaluation data, are still MultiPL-E); ours is everything else."""
    if not isinstance(row, dict):
        raise ValueError(f"{where}: expected an object, got {type(row).__name__}")
    if "canonical_solution" in row and "declaration" in row:
        return humaneval_x(row, where)
    if "tests" in row and "name" in row and ("language" in row or "stop_tokens" in row or "task_id" not in row):
        return multipl_e(row, where)
    return native(row, where)


def task_from_row(row: dict, where: str) -> Task:
    try:
        task = _detect(row, where)
    except TypeError as exc:  # a field of the wrong type, e.g. "cases": 5 or "abs_tol": [1]
        raise ValueError(f"{where}: {exc}") from None
    if task.kind == "function":  # found now, not when a batch is scored: asserts, main, a prompt we can cut
        try:
            check_function_task(task.program_head, task.tests)
        except ValueError as exc:
            raise ValueError(f"{where}: task {task.task_id}: {exc}") from None
    return task


def load_tasks(path: str | Path) -> list[Task]:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"task file {path} does not exist")
    try:
        tasks = [task_from_row(row, f"{path}:{n}") for n, row in _records(path)]
    except (OSError, EOFError, UnicodeDecodeError) as exc:  # not gzip, truncated, not UTF-8, unreadable
        raise ValueError(f"task file {path}: cannot read it ({exc})") from None
    if not tasks:
        raise ValueError(f"task file {path} has no tasks")
    seen: set[str] = set()
    for task in tasks:
        if task.task_id in seen:
            raise ValueError(f"{path}: duplicate task_id {task.task_id!r}")
        seen.add(task.task_id)
    return tasks


def load_embedded() -> list[Task]:
    tasks = [t for path in sorted(EMBEDDED_DIR.glob("*.yaml")) for t in load_tasks(path)]
    if len({t.task_id for t in tasks}) != len(tasks):
        raise ValueError(f"{EMBEDDED_DIR}: duplicate task_id across files")
    return tasks
