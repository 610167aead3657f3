"""Task loaders: HumanEval-X C++, MultiPL-E C++, our stdio/compile/function format, and the embedded set.

`load_tasks(path)` detects the format per record; bad records raise ValueError naming file, line and field.
The file format is documented in docs/tasks.md.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from configs.loader import jsonl_rows
from rewards.harness import assemble, check_function_task
from rewards.task_schema import NativeTaskSpec
from rewards.types import StdioCase, Task

EMBEDDED_DIR = Path(__file__).with_name("data") / "embedded"  # one YAML file per tier, our own problems
# The last line of a prompt that opens the function to complete: `head` is that line, `name` the function.
FINAL_SIGNATURE = re.compile(r"(?P<head>[^\n;{}]*\b(?P<name>[A-Za-z_]\w*)\s*\([^()]*\)\s*\{\s*)$")


def _entry_point(prompt: str) -> str:
    match = FINAL_SIGNATURE.search(prompt.rstrip())
    return match.group("name") if match else ""


# PyYAML's message for a block scalar whose first line is indented deeper than a later one (the usual
# `reference: |` whose body lines are indented and whose closing `}` is not).
_BLOCK_HINT = ("hint: a block scalar (`|`) takes its indentation from its first line; when that line is "
               "indented deeper than a later one (a function body before its closing `}`), give the "
               "indentation explicitly: `reference: |2` (docs/tasks.md)")


def _yaml_items(path: Path) -> Iterator[tuple[str, dict]]:
    """(where, row) per item of a YAML task list; `where` is `FILE:LINE (item N)`, LINE the item's first."""
    try:
        with open(path, encoding="utf-8") as f:  # a stream with a name: PyYAML's marks name the file
            root = yaml.compose(f, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        hint = f"\n{_BLOCK_HINT}" if "expected <block end>" in str(exc) else ""
        raise ValueError(f"{where}: invalid YAML: {getattr(exc, 'problem', None) or exc}{hint}") from None
    if root is None or not isinstance(root, yaml.SequenceNode):
        raise ValueError(f"{path}: expected a list of tasks (`- task_id: ...` items)")
    constructor = yaml.SafeLoader("")
    for i, node in enumerate(root.value, 1):
        yield f"{path}:{node.start_mark.line + 1} (item {i})", constructor.construct_document(node)


def _records(path: Path) -> Iterator[tuple[str, dict]]:
    if path.suffix in (".yaml", ".yml"):
        yield from _yaml_items(path)
        return
    for lineno, row in jsonl_rows(path):
        yield f"{path}:{lineno}", row


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
    """A row of our format, validated by rewards.task_schema (unknown fields refused)."""
    try:
        spec = NativeTaskSpec.parse(row)
    except ValueError as exc:
        task_id = row.get("task_id")
        raise ValueError(f"{where}: " + (f"task {task_id}: " if isinstance(task_id, str) else "") + str(exc)) from None
    kind = spec.kind or ("stdio" if spec.cases else "function")
    try:
        return Task(task_id=spec.task_id, kind=kind, prompt=spec.prompt, tests=spec.tests or "",
                    cases=tuple(StdioCase(c.input, c.output) for c in spec.cases or ()), checker=spec.checker,
                    abs_tol=spec.abs_tol, rel_tol=spec.rel_tol, reference=spec.reference,
                    entry_point=spec.entry_point or _entry_point(spec.base_prompt if kind == "repair" and spec.base_prompt
                                                                 else spec.prompt),
                    stop_tokens=tuple(spec.stop_tokens or ()), tier=spec.tier,
                    flags=tuple(spec.flags) if spec.flags is not None else Task.flags,
                    link_flags=tuple(spec.link_flags or ()), time_limit_s=spec.time_limit_s,
                    memory_mb=spec.memory_mb, source=spec.source, base_prompt=spec.base_prompt or "",
                    sanitize=spec.sanitize)
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
    """One record of any format, checked as far as it can be without a compiler: the schema, the flags, and
    for a function task the assembly of its tests' unit (with the reference, when there is one), so a task
    the harness cannot handle is refused here, not when a batch is scored."""
    try:
        task = _detect(row, where)
    except TypeError as exc:  # a field of the wrong type in another format, e.g. "prompt": 5
        raise ValueError(f"{where}: {exc}") from None
    if task.kind == "function":
        try:
            if task.reference is None:
                check_function_task(task.program_head, task.tests)
            else:  # assembling checks what check_function_task checks, with the reference's body too
                unit = assemble(task.program_head, task.reference + task.completion_suffix, task.tests)
                if unit.body_error:
                    raise ValueError(f"field 'reference': {unit.body_error.replace('the completion', 'the reference')}")
        except ValueError as exc:
            raise ValueError(f"{where}: task {task.task_id}: {exc}") from None
    return task


@dataclass(frozen=True)
class TaskFile:
    """A loaded task file; `skipped` holds `where: why` for each record refused under lenient loading."""

    tasks: list[Task]
    skipped: list[str] = field(default_factory=list)


def load_task_file(path: str | Path, lenient: bool = False) -> TaskFile:
    """Every record of `path`, validated. Strict (default): the first bad record is an error naming its file,
    line and field. Lenient: bad records are skipped and listed; an empty result is still an error."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"task file {path} does not exist")
    tasks: list[Task] = []
    skipped: list[str] = []
    seen: set[str] = set()
    try:
        for where, row in _records(path):
            try:
                task = task_from_row(row, where)
                if task.task_id in seen:
                    raise ValueError(f"{where}: duplicate task_id {task.task_id!r}")
            except ValueError as exc:
                if not lenient:
                    raise
                skipped.append(str(exc))
                continue
            seen.add(task.task_id)
            tasks.append(task)
    except (OSError, EOFError, UnicodeDecodeError) as exc:  # not gzip, truncated, not UTF-8, unreadable
        raise ValueError(f"task file {path}: cannot read it ({exc})") from None
    if not tasks:
        raise ValueError(f"task file {path} has no usable tasks" + (f" ({len(skipped)} skipped, first: "
                                                                      f"{skipped[0]})" if skipped else ""))
    return TaskFile(tasks, skipped)


def load_tasks(path: str | Path) -> list[Task]:
    """Every task of `path` (any format), strictly validated (load_task_file)."""
    return load_task_file(path).tasks


def load_embedded() -> list[Task]:
    tasks = [t for path in sorted(EMBEDDED_DIR.glob("*.yaml")) for t in load_tasks(path)]
    if len({t.task_id for t in tasks}) != len(tasks):
        raise ValueError(f"{EMBEDDED_DIR}: duplicate task_id across files")
    return tasks
