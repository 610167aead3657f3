"""Scorer: (task, completion) pairs -> sandbox jobs -> verdicts -> rewards, in one batched call.

A completion passes only when its tests really ran to the end and passed: assert-style tests through the
tamper-proof harness (rewards.harness), stdio tests by host-side checkers. SANDBOX_ERROR (infrastructure,
after the pool's retries) is never turned into a reward: such samples get `reward=None` and are counted.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace

from rewards.extract import defines_function, extract
from rewards.harness import AssembledTest, assemble, new_secret, verify
from rewards.reward import RewardConfig, count_warnings, has_reasoning, reward_components
from rewards.tasks import FINAL_SIGNATURE
from rewards.types import ScoredSample, Task
from sandbox.types import DEFAULT_RUN_LIMITS, Job, Result, StageLimits, TestCase, Verdict



@dataclass
class _Prepared:
    job: Job
    secret: str = ""
    assembled: AssembledTest | None = None
    first_line: int = 1
    solution: str = ""


def solution_source(task: Task, completion: str, mode: str) -> tuple[str, int]:
    """solution.cpp's text and the 1-based line where the completion starts.

    A chat answer that defines the entry function itself replaces the prompt's signature (the prompt's
    preamble, its includes and helpers, is kept)."""
    if mode == "chat" and task.entry_point and defines_function(completion, task.entry_point):
        match = FINAL_SIGNATURE.search(task.prompt.rstrip())
        preamble = task.prompt[: match.start()] if match else ""
        return preamble + "\n" + completion + "\n", preamble.count("\n") + 2
    return task.prompt + completion + task.completion_suffix + "\n", task.prompt.count("\n") + 1


class Scorer:
    def __init__(self, pool, config: RewardConfig | None = None, mode: str = "raw",
                 run_limits: StageLimits = DEFAULT_RUN_LIMITS) -> None:
        self.pool = pool
        self.config = config or RewardConfig()
        self.mode = mode
        self.run_limits = run_limits
        self.counters: Counter[str] = Counter()

    def prepare(self, task: Task, completion: str) -> _Prepared:
        flags = (*task.flags, *self.config.warning_flags, *task.link_flags)
        solution, first_line = solution_source(task, completion, self.mode)
        if task.kind == "compile":
            job = Job({"solution.cpp": solution}, flags=(*flags, "-c"), tests=(), compile_only=True)
            return _Prepared(job, first_line=first_line, solution=solution)
        if task.kind == "stdio":
            tests = tuple(TestCase(stdin=c.input.encode(), expected_stdout=c.output, checker=task.checker,
                                   abs_tol=task.abs_tol, rel_tol=task.rel_tol) for c in task.cases)
            return _Prepared(Job({"solution.cpp": solution}, flags=flags, tests=tests, run_limits=self.run_limits),
                             first_line=first_line, solution=solution)
        assembled = assemble(task.prompt, completion + task.completion_suffix, task.tests)
        files = dict(assembled.files, **{"solution.cpp": solution})
        secret = new_secret()
        job = Job(files, flags=flags, tests=(TestCase(stdin=secret.encode()),), run_limits=self.run_limits)
        return _Prepared(job, secret, assembled, first_line, solution)

    def score(self, items: Sequence[tuple[Task, str]], progress: bool = False) -> list[ScoredSample]:
        """Score raw model outputs (extraction applied here). Order is preserved."""
        completions = [extract(text, self.mode, task.stop_tokens) for task, text in items]
        prepared = [self.prepare(task, c) for (task, _), c in zip(items, completions)]
        results = self.pool.run_batch([p.job for p in prepared], progress=progress)
        scored = [self.judge(task, c, p, r) for (task, _), c, p, r in zip(items, completions, prepared, results)]
        for s in scored:
            self.counters["samples"] += 1
            self.counters[f"verdict/{s.verdict}"] += 1
            if s.reward is None:
                self.counters["sandbox_errors"] += 1
        return scored

    def judge(self, task: Task, completion: str, prep: _Prepared, result: Result) -> ScoredSample:
        if result.verdict is Verdict.SANDBOX_ERROR:
            return ScoredSample(task.task_id, completion, False, Verdict.SANDBOX_ERROR.value, 0, 0, None,
                                detail=result.error)
        summary = result.to_json()
        compiled = result.verdict is not Verdict.COMPILE_ERROR
        warnings = count_warnings(summary["compile_output"], "solution.cpp", prep.first_line) if compiled else 0
        verdict, detail = result.verdict.value, summary["detail"]
        if task.kind == "compile":
            passed, done, total = compiled, int(compiled), 1
        elif task.kind == "stdio":
            total = len(task.cases)
            done = result.tests_passed
            passed = compiled and result.verdict is Verdict.OK
        else:
            total = prep.assembled.num_sites
            if not compiled:
                done, passed = 0, False
            else:
                report = verify(result.tests[0].stdout if result.tests else "", prep.secret, total)
                done = report.sites_passed
                passed = result.verdict is Verdict.OK and report.completed and done == total
                if result.verdict is Verdict.OK and not passed:
                    verdict = Verdict.WRONG_ANSWER.value
                    detail = "tests did not complete" if not report.completed else f"{done}/{total} asserts passed"
                if report.forged_lines:
                    detail += f"; {report.forged_lines} forged harness lines ignored"
        components = reward_components(compiled, warnings, done, total, has_reasoning(completion), self.config)
        return ScoredSample(task.task_id, completion, passed, verdict, done, total, round(sum(components.values()), 6),
                            components, warnings, detail)


def canonical_items(tasks: Sequence[Task]) -> list[tuple[Task, str]]:
    """Each task with its reference solution (raw mode, no stop strings applied)."""
    missing = [t.task_id for t in tasks if t.reference is None]
    if missing:
        raise ValueError(f"{len(missing)} tasks have no reference solution, e.g. {missing[0]}")
    return [(replace(t, stop_tokens=()), t.reference) for t in tasks]
