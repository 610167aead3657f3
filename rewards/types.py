"""Records of the rewards package: tasks (a prompt plus the means to verify an answer) and scored samples."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from sandbox.flags import check_flags

TaskKind = Literal["function", "stdio", "compile", "repair"]
# How a raw continuation's end is found: "stop" cuts at the first stop string (MultiPL-E, ours);
# "close-function" keeps text up to the brace that closes the prompt's function (HumanEval-X's generator).
Finish = Literal["stop", "close-function"]


@dataclass(frozen=True)
class StdioCase:
    input: str
    output: str


@dataclass(frozen=True)
class Task:
    """A prompt and how to verify a completion of it.

    kind="function": `prompt` ends with the `{` of the function to complete; `tests` is assert-style C++
    with a `main`, compiled in its own translation unit (see rewards.harness).
    kind="stdio": the completed program reads stdin; `cases` are checked with `checker` on the host.
    kind="compile": compiling alone decides (pretraining's compile-rate eval).
    kind="repair": `prompt` shows a buggy program and its debug state (rewards.repair); the answer is the fixed
    function (with `tests`, scored as a chat answer to `base_prompt`) or the fixed whole program (with `cases`).
    """

    task_id: str
    kind: TaskKind
    prompt: str
    tests: str = ""
    cases: tuple[StdioCase, ...] = ()
    checker: str = "tokens"
    abs_tol: float = 1e-6
    rel_tol: float = 1e-6
    reference: str | None = None  # a completion known to pass (canonical solution)
    entry_point: str = ""
    stop_tokens: tuple[str, ...] = ()
    completion_suffix: str = ""  # appended after the completion (MultiPL-E's "\n}")
    preamble: str = ""  # put before the prompt in every assembled program (HumanEval-X's missing includes)
    finish: Finish = "stop"
    flags: tuple[str, ...] = ("-std=c++17", "-O2")
    link_flags: tuple[str, ...] = ()
    tier: int | None = None
    source: str = ""
    time_limit_s: float | None = None  # CPU seconds per test run (None: the sandbox's run limits)
    memory_mb: int | None = None  # address space per test run (None: the sandbox's run limits)
    base_prompt: str = ""  # kind="repair" with tests: the original prompt, whose function the answer replaces
    sanitize: bool = False  # always scored under AddressSanitizer + UBSan (as with RewardConfig.sanitize)

    @property
    def program_head(self) -> str:
        """What precedes the completion in the assembled program: preamble + prompt."""
        return self.preamble + self.prompt

    def __post_init__(self) -> None:
        if not self.task_id:
            raise ValueError("Task.task_id is empty")
        if self.kind == "function" and not self.tests.strip():
            raise ValueError(f"task {self.task_id}: kind=function needs `tests`")
        if self.kind == "stdio" and not self.cases:
            raise ValueError(f"task {self.task_id}: kind=stdio needs at least one case")
        if self.kind == "repair" and not (self.cases or (self.tests.strip() and self.base_prompt.strip())):
            raise ValueError(f"task {self.task_id}: kind=repair needs `cases`, or `tests` with `base_prompt`")
        if self.kind not in ("function", "stdio", "compile", "repair"):
            raise ValueError(f"task {self.task_id}: unknown kind {self.kind!r}")
        if self.finish not in ("stop", "close-function"):
            raise ValueError(f"task {self.task_id}: unknown finish {self.finish!r} (stop or close-function)")
        for name in ("flags", "link_flags"):  # task files are untrusted input to g++ (sandbox/flags.py)
            try:
                check_flags(getattr(self, name), name)
            except ValueError as exc:
                raise ValueError(f"task {self.task_id}: {exc}") from None


@dataclass
class ScoredSample:
    """One completion's verdict and reward; `components` are reported separately for dashboards."""

    task_id: str
    completion: str
    passed: bool
    verdict: str
    tests_passed: int
    tests_total: int
    reward: float | None  # None: could not be scored (sandbox failure); never turned into a number
    components: dict[str, float] = field(default_factory=dict)
    warnings: int = 0
    detail: str = ""  # why: the first error, failing asserts or stdio case, the runtime's stderr
    diagnostics: str = ""  # the compiler's first ~2 KB, lines relative to the completion (completion:L:)
    sanitizer: dict | None = None  # the sanitizer's finding (sandbox.types.SanitizerFinding), sanitized runs only

    def to_json(self) -> dict:
        return {
            "task_id": self.task_id, "passed": self.passed, "verdict": self.verdict,
            "tests_passed": self.tests_passed, "tests_total": self.tests_total, "reward": self.reward,
            **{f"reward/{k}": v for k, v in self.components.items()}, "warnings": self.warnings,
            "detail": self.detail, "diagnostics": self.diagnostics, "sanitizer": self.sanitizer,
        }
