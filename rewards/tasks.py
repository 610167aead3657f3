"""Task loaders: HumanEval-X C++, MultiPL-E C++, our stdio/compile/function format, and the embedded set.

`load_tasks(path)` detects the format per record; bad records raise ValueError naming file, line and field.
The file format is documented in docs/tasks.md.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import yaml

from configs.loader import jsonl_rows
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


def humaneval_x(row: dict, where: str) -> Task:
    _require(row, where, "task_id", "prompt", "canonical_solution", "test")
    return Task(task_id=row["task_id"], kind="function", prompt=row["prompt"], tests=row["test"],
                reference=row["canonical_solution"], entry_point=_entry_point(row["prompt"]),
                stop_tokens=("\n}\n",), link_flags=("-lcrypto",), source="humaneval-x")


def multipl_e(row: dict, where: str) -> Task:
    _require(row, where, "name", "prompt", "tests")
    tests = row["tests"].lstrip()
    # MultiPL-E completions stop before the function's closing brace; its tests start with that brace.
    suffix = ""
    if tests.startswith("}"):
        suffix, tests = "}\n", tests[1:]
    return Task(task_id=row["name"], kind="function", prompt=row["prompt"], tests=tests,
                reference=row.get("canonical_solution"), entry_point=_entry_point(row["prompt"]),
                stop_tokens=tuple(row.get("stop_tokens") or ()), completion_suffix=suffix, source="multipl-e")


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
    if not isinstance(row, dict):
        raise ValueError(f"{where}: expected an object, got {type(row).__name__}")
    if "canonical_solution" in row and "declaration" in row:
        return humaneval_x(row, where)
    if "name" in row and "tests" in row and "task_id" not in row:
        return multipl_e(row, where)
    return native(row, where)


def _task(row: dict, where: str) -> Task:
    try:
        return _detect(row, where)
    except TypeError as exc:  # a field of the wrong type, e.g. "cases": 5 or "abs_tol": [1]
        raise ValueError(f"{where}: {exc}") from None


def load_tasks(path: str | Path) -> list[Task]:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"task file {path} does not exist")
    try:
        tasks = [_task(row, f"{path}:{n}") for n, row in _records(path)]
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


def is_heldout(task_id: str, fraction: float = 0.25, seed: int = 0) -> bool:
    """Deterministic held-out split by task id (stable across runs, machines and task order)."""
    digest = hashlib.sha256(f"{seed}:{task_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction
