"""Scorer: (task, completion) pairs -> sandbox jobs -> verdicts -> rewards, in one batched call.

A completion passes only when its tests really ran to the end and passed: assert-style tests through the
tamper-proof harness (rewards.harness), stdio tests by host-side checkers. SANDBOX_ERROR (infrastructure,
after the pool's retries) is never turned into a reward: such samples get `reward=None` and are counted.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

from rewards.extract import completion_of, defines_function, function_body_start
from rewards.harness import AssembledTest, HarnessReport, assemble, new_secret, verify
from rewards.reward import RewardConfig, count_warnings, has_reasoning, reward_components, silences_warnings
from rewards.tasks import FINAL_SIGNATURE
from rewards.types import ScoredSample, Task
from sandbox.types import DEFAULT_RUN_LIMITS, Job, Result, StageLimits, TestCase, Verdict

TASK_ERROR = "TASK_ERROR"  # the task, not the completion, could not be assembled (reward None, counted)
MAX_COMPLETION_BYTES = 256 << 10  # a longer completion is not compiled (scored as a compile failure)
DIAGNOSTICS_BYTES = 2048  # how much compiler output each scored sample carries
_LOCATION = re.compile(r"^(?:/work/src/)?solution\.cpp:(\d+):", re.M)
_GUTTER = re.compile(r"^( *)(\d+)( \| )")  # g++'s source excerpt: "    6 |   return a + b"
_FILE_LINE = re.compile(r"^(\S+?):\d+:(?:\d+:)? ")  # a diagnostic's location: the excerpt below is that file's


def relative_diagnostics(compile_output: str, first_line: int, limit: int = DIAGNOSTICS_BYTES) -> str:
    """The compiler's first `limit` bytes with solution.cpp locations made relative: `completion:L:` for a line
    of the completion (1 = its first line), `prompt:L:` for one before it; excerpt line numbers likewise."""
    def where(m: re.Match) -> str:
        line = int(m.group(1))
        return f"completion:{line - first_line + 1}:" if line >= first_line else f"prompt:{line}:"

    def gutter(m: re.Match) -> str:
        line = int(m.group(2))
        shown = str(line - first_line + 1) if line >= first_line else f"p{line}"
        return m.group(1) + shown.rjust(len(m.group(2))) + m.group(3)

    lines, ours = [], False
    for line in compile_output.replace("/work/src/", "").replace("solution.cpp: In ", "In ").splitlines():
        located = _FILE_LINE.match(line)
        if located:
            ours = located.group(1) == "solution.cpp"
        lines.append(_GUTTER.sub(gutter, line) if ours and not located else line)
    text = _LOCATION.sub(where, "\n".join(lines) + ("\n" if compile_output.endswith("\n") else ""))
    return text if len(text) <= limit else text[:limit] + "\n[...]"


def _head(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def assert_detail(report: HarnessReport, site_lines: tuple[str, ...], shown: int = 3) -> str:
    """`2/4 asserts passed; failed #3 `assert (f(2)==4);`; not reached #4 ...` from the harness report."""
    def site(i: int) -> str:
        return f"#{i} `{site_lines[i - 1]}`" if 0 < i <= len(site_lines) else f"#{i}"

    parts = [f"{report.sites_passed}/{report.num_sites} asserts passed"]
    if report.failed_sites:
        parts.append("failed " + ", ".join(site(i) for i in report.failed_sites[:shown])
                     + (f" and {len(report.failed_sites) - shown} more" if len(report.failed_sites) > shown else ""))
    if report.unreached_sites:
        parts.append(f"not reached {site(report.unreached_sites[0])}"
                     + (f" and {len(report.unreached_sites) - 1} more" if len(report.unreached_sites) > 1 else ""))
    if not report.completed:
        parts.append("the tests did not run to their end")
    return "; ".join(parts)


def stdio_detail(task: Task, result: Result) -> str:
    """The first failing case: its index, input, expected and actual output (heads)."""
    for i, (case, test) in enumerate(zip(task.cases, result.tests)):
        if test.verdict is not Verdict.OK:
            text = f"case {i + 1}/{len(task.cases)}: {test.detail or test.verdict.value}; input {_head(case.input)!r}"
            if test.verdict is Verdict.WRONG_ANSWER:
                text += f"; expected {_head(case.output)!r}; got {_head(test.stdout)!r}"
            if test.stderr.strip():
                text += f"; stderr {_head(test.stderr.strip())!r}"
            return text
    return ""


@dataclass
class _Prepared:
    job: Job
    secret: str = ""
    assembled: AssembledTest | None = None
    first_line: int = 1
    solution: str = ""


def solution_source(task: Task, completion: str, mode: str) -> tuple[str, int]:
    """solution.cpp's text and the 1-based line where the completion starts.

    This is what each format's official harness compiles, up to the test: HumanEval-X `helpers + "\n" +
    prompt + completion`, MultiPL-E `prompt + completion + "\n}"`, ours `prompt + completion`. A chat answer
    that defines the entry function itself replaces the prompt's signature (the prompt's preamble, its
    includes and helpers, is kept)."""
    if mode == "chat" and task.entry_point and defines_function(completion, task.entry_point):
        match = FINAL_SIGNATURE.search(task.prompt.rstrip())
        preamble = task.preamble + (task.prompt[: match.start()] if match else "")
        return preamble + "\n" + completion + "\n", preamble.count("\n") + 2
    head = task.program_head
    return head + completion + task.completion_suffix + "\n", head.count("\n") + 1


def sanitizer_of(result: Result, first_line: int) -> dict | None:
    """The run's sanitizer finding as a record, with `completion_line`: its line counted in the completion
    (1 = the completion's first line; 0 when it is not in the completion, e.g. in the prompt or the tests)."""
    if result.finding is None:
        return None
    finding = asdict(result.finding)
    in_completion = finding["file"] == "solution.cpp" and finding["line"] >= first_line
    finding["completion_line"] = finding["line"] - first_line + 1 if in_completion else 0
    return finding


def as_scored(task: Task, mode: str) -> tuple[Task, str]:
    """The task and extraction mode a completion is scored as. A repair answer is the fixed function, scored
    as a chat answer that defines it (the `base_prompt` keeps its includes and helpers), or the fixed whole
    program for a stdio task; any other task as it is."""
    if task.kind != "repair":
        return task, mode
    if task.cases:
        return replace(task, kind="stdio", prompt="", preamble=""), mode
    return replace(task, kind="function", prompt=task.base_prompt), "chat"


class Scorer:
    def __init__(self, pool, config: RewardConfig | None = None, mode: str = "raw",
                 run_limits: StageLimits = DEFAULT_RUN_LIMITS) -> None:
        self.pool = pool
        self.config = config or RewardConfig()
        self.mode = mode
        self.run_limits = run_limits
        self.counters: Counter[str] = Counter()

    def limits(self, task: Task) -> StageLimits:
        """The run limits of `task`: its own `time_limit_s` (CPU; the wall clock gets twice that) and
        `memory_mb` where it sets them, the scorer's otherwise."""
        limits = self.run_limits
        if task.time_limit_s is not None:
            limits = replace(limits, cpu_s=task.time_limit_s, wall_s=2 * task.time_limit_s)
        if task.memory_mb is not None:
            limits = replace(limits, memory_mb=task.memory_mb)
        return limits

    def prepare(self, task: Task, completion: str) -> _Prepared:
        task, mode = as_scored(task, self.mode)
        flags = (*task.flags, *self.config.warning_flags, *task.link_flags)
        solution, first_line = solution_source(task, completion, mode)
        if task.kind == "compile":
            job = Job({"solution.cpp": solution}, flags=(*flags, "-c"), tests=(), compile_only=True)
            return _Prepared(job, first_line=first_line, solution=solution)
        if task.kind == "stdio":
            tests = tuple(TestCase(stdin=c.input.encode(), expected_stdout=c.output, checker=task.checker,
                                   abs_tol=task.abs_tol, rel_tol=task.rel_tol) for c in task.cases)
            return _Prepared(Job({"solution.cpp": solution}, flags=flags, tests=tests, run_limits=self.limits(task),
                                 sanitize=self.config.sanitize or task.sanitize), first_line=first_line, solution=solution)
        chat_body = function_body_start(completion, task.entry_point) if mode == "chat" else None
        continuation = completion[chat_body:] if chat_body is not None else completion + task.completion_suffix
        assembled = assemble(task.program_head, completion + task.completion_suffix, task.tests, continuation)
        files = dict(assembled.files, **{"solution.cpp": solution})
        secret = new_secret()
        job = Job(files, flags=flags, tests=(TestCase(stdin=secret.encode()),), run_limits=self.limits(task),
                  private_units=("solution.cpp",), sanitize=self.config.sanitize or task.sanitize)
        return _Prepared(job, secret, assembled, first_line, solution)

    def score(self, items: Sequence[tuple[Task, str]], progress: bool = False) -> list[ScoredSample]:
        """Score raw model outputs (extraction applied here). Order is preserved; a completion too large to
        compile is scored as a compile failure without reaching the sandbox."""
        completions = [completion_of(text, self.mode, task.stop_tokens, task.finish) for task, text in items]
        oversized = [len(c.encode()) > MAX_COMPLETION_BYTES for c in completions]
        prepared = [self._oversized(task, c) if big else self._prepare_or_refuse(task, c)
                    for (task, _), c, big in zip(items, completions, oversized)]
        results = iter(self.pool.run_batch([p.job for p in prepared if isinstance(p, _Prepared)], progress=progress))
        scored = [self.judge(task, c, p, next(results)) if isinstance(p, _Prepared) else p
                  for (task, _), c, p in zip(items, completions, prepared)]
        for s in scored:
            self.counters["samples"] += 1
            self.counters[f"verdict/{s.verdict}"] += 1
            if s.verdict == TASK_ERROR:
                self.counters["task_errors"] += 1
            elif s.reward is None:
                self.counters["sandbox_errors"] += 1
        return scored

    def explain(self, task: Task, text: str) -> tuple[_Prepared, Result, ScoredSample]:
        """One sample, keeping what `score` throws away: the assembled job and the sandbox's full result."""
        completion = completion_of(text, self.mode, task.stop_tokens, task.finish)
        prep = self.prepare(task, completion)
        (result,) = self.pool.run_batch([prep.job])
        return prep, result, self.judge(task, completion, prep, result)

    def _prepare_or_refuse(self, task: Task, completion: str) -> _Prepared | ScoredSample:
        """A task the harness cannot assemble (possible only for a Task built in code: files are checked
        when they load) is reported on its own sample, unscored, so the rest of the batch is kept."""
        try:
            return self.prepare(task, completion)
        except ValueError as exc:
            return ScoredSample(task.task_id, completion, False, TASK_ERROR, 0, 0, None,
                                detail=f"task {task.task_id}: {exc}")

    def _oversized(self, task: Task, completion: str) -> ScoredSample:
        components = reward_components(False, 0, 0, 0, False, self.config)
        return ScoredSample(task.task_id, completion, False, Verdict.COMPILE_ERROR.value, 0, 0,
                            round(sum(components.values()), 6), components, 0,
                            f"completion is {len(completion.encode())} bytes, over the {MAX_COMPLETION_BYTES} limit")

    def judge(self, task: Task, completion: str, prep: _Prepared, result: Result) -> ScoredSample:
        task, _ = as_scored(task, self.mode)
        if result.verdict is Verdict.SANDBOX_ERROR:
            return ScoredSample(task.task_id, completion, False, Verdict.SANDBOX_ERROR.value, 0, 0, None,
                                detail=result.error)
        summary = result.to_json()
        compiled = result.verdict is not Verdict.COMPILE_ERROR
        warnings = count_warnings(summary["compile_output"], "solution.cpp", prep.first_line) if compiled else 0
        diagnostics = relative_diagnostics(summary["compile_output"], prep.first_line)
        verdict, detail = result.verdict.value, summary["detail"]
        if not compiled:
            detail = next((line for line in diagnostics.splitlines() if ": error:" in line), detail)
        if task.kind == "compile":
            passed, done, total = compiled, int(compiled), 1
        elif task.kind == "stdio":
            total = len(task.cases)
            done = result.tests_passed
            passed = compiled and result.verdict is Verdict.OK
            if compiled and not passed:
                detail = stdio_detail(task, result) or detail
        else:
            total = prep.assembled.num_sites
            if not compiled:
                done, passed = 0, False
            else:
                run = result.tests[0] if result.tests else None
                report = verify(run.stdout if run else "", prep.secret, total)
                done = report.sites_passed
                passed = result.verdict is Verdict.OK and report.completed and done == total
                if result.verdict is Verdict.OK and not passed:
                    verdict = Verdict.WRONG_ANSWER.value
                if not passed:
                    detail = "; ".join(x for x in (
                        detail if result.verdict is not Verdict.OK else "",
                        assert_detail(report, prep.assembled.site_lines),
                        f"stderr {_head(run.stderr.strip())!r}" if run and run.stderr.strip() else "") if x)
                if report.forged_lines:
                    detail += f"; {report.forged_lines} forged harness lines ignored"
        if warnings:  # the bonus was lost: say for which warning (the first in the completion)
            first = next((line for line in diagnostics.splitlines()
                          if line.startswith("completion:") and ": warning:" in line), "")
            detail = "; ".join(x for x in (detail, f"{warnings} warning(s) in the completion, first: {first}") if x)
        components = reward_components(compiled, warnings, done, total,
                                       has_reasoning(completion, self.config.reasoning_min_words), self.config,
                                       silenced=silences_warnings(completion),
                                       sanitizer_finding=result.finding is not None)
        return ScoredSample(task.task_id, completion, passed, verdict, done, total, round(sum(components.values()), 6),
                            components, warnings, detail, diagnostics,
                            sanitizer_of(result, prep.first_line))


def canonical_items(tasks: Sequence[Task]) -> list[tuple[Task, str]]:
    """Each task with its reference solution (raw mode, no stop strings applied)."""
    missing = [t.task_id for t in tasks if t.reference is None]
    if missing:
        raise ValueError(f"{len(missing)} tasks have no reference solution, e.g. {missing[0]}")
    return [(replace(t, stop_tokens=()), t.reference) for t in tasks]
