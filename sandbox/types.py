"""Records the sandbox hands out and takes in: limits, jobs, verdicts and results."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from enum import Enum

from sandbox.flags import check_flags
from sandbox.image import DEFAULT_FLAGS, SANITIZE_FLAGS
from sandbox.runner import SOURCE_SUFFIXES


class Verdict(str, Enum):
    OK = "OK"
    COMPILE_ERROR = "COMPILE_ERROR"
    RUNTIME_ERROR = "RUNTIME_ERROR"
    TIME_LIMIT = "TIME_LIMIT"
    MEMORY_LIMIT = "MEMORY_LIMIT"
    OUTPUT_LIMIT = "OUTPUT_LIMIT"
    WRONG_ANSWER = "WRONG_ANSWER"
    # The infrastructure failed (worker died, daemon gone) and retries ran out. Never a program's verdict.
    SANDBOX_ERROR = "SANDBOX_ERROR"


@dataclass(frozen=True)
class StageLimits:
    """Limits for one stage (compile, or one test run). Enforced per process by rlimits plus a wall clock."""

    cpu_s: float = 5.0
    wall_s: float = 10.0
    memory_mb: int = 512
    max_processes: int = 16
    max_file_mb: int = 16
    max_output_bytes: int = 1 << 20
    max_open_files: int = 64
    # Separate from memory_mb: glibc gives every thread a stack of RLIMIT_STACK, so a stack limit equal to
    # the address space would leave no room for std::thread, std::async or OpenMP.
    stack_mb: int = 64

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if value <= 0:
                raise ValueError(f"StageLimits.{name} must be > 0, got {value!r}")


DEFAULT_COMPILE_LIMITS = StageLimits(
    cpu_s=20.0, wall_s=30.0, memory_mb=2048, max_processes=16, max_file_mb=64, max_output_bytes=1 << 20,
    max_open_files=256,
)
DEFAULT_RUN_LIMITS = StageLimits()
# The most a task may ask for per test run (its `time_limit_s`, `memory_mb`): within what one sandbox worker
# holds by default (SandboxConfig.worker_memory_mb 3072, less the runner's share) and a bounded step time.
TASK_MAX_TIME_S = 60.0
TASK_MAX_MEMORY_MB = 2048


@dataclass(frozen=True)
class TestCase:
    """One run of the compiled program. `expected_stdout=None` means the exit status alone decides."""

    stdin: bytes = b""
    expected_stdout: str | None = None
    checker: str = "tokens"  # see sandbox.checkers.CHECKERS
    args: tuple[str, ...] = ()
    abs_tol: float = 1e-6  # for checker="float"
    rel_tol: float = 1e-6

    __test__ = False  # not a pytest test class


@dataclass(frozen=True)
class SanitizerFinding:
    """What AddressSanitizer or UndefinedBehaviorSanitizer reported about a sanitized run (Job.sanitize).

    `kind` is the sanitizer's own name for it (heap-buffer-overflow, heap-use-after-free, SEGV) or, for UBSan,
    a slug of its message (signed-integer-overflow, null-pointer, index-out-of-bounds); `file`/`line`/
    `function` are the first frame in one of the job's own source files ("" / 0 when none was found)."""

    tool: str  # "AddressSanitizer" | "UndefinedBehaviorSanitizer" | "sanitizer" (exit status only)
    kind: str
    message: str = ""
    file: str = ""
    line: int = 0
    function: str = ""

    def describe(self) -> str:
        where = f" at {self.file}:{self.line}" if self.file else ""
        func = f" in {self.function}" if self.function else ""
        return f"{self.tool}: {self.kind}{where}{func}" + (f" ({self.message})" if self.message else "")


@dataclass(frozen=True)
class Job:
    """Compile `files` (every .cpp/.cc is a translation unit; headers may be included) and run each test."""

    files: dict[str, str]
    flags: tuple[str, ...] = DEFAULT_FLAGS
    tests: tuple[TestCase, ...] = (TestCase(),)
    compile_limits: StageLimits = DEFAULT_COMPILE_LIMITS
    run_limits: StageLimits = DEFAULT_RUN_LIMITS
    stop_on_failure: bool = False
    compile_only: bool = False  # no run stage: the verdict is the compile's (tests must be empty)
    # Units whose global definitions serve the others only where those import them and no system library
    # exports them (sandbox.runner.build_with_private_units): the tamper-proof tests' solution.cpp.
    private_units: tuple[str, ...] = ()
    # Compile with AddressSanitizer + UBSan (sandbox.image.SANITIZE_FLAGS) and run with their runtime options
    # (sandbox.sanitizer): a finding ends the run (RUNTIME_ERROR) and is reported as ExecResult.finding.
    sanitize: bool = False

    def __post_init__(self) -> None:
        if not self.files:
            raise ValueError("Job.files is empty: give at least one source file")
        for name in self.files:
            if not name or "/" in name or name.startswith("."):
                raise ValueError(f"Job.files: invalid file name {name!r} (plain names only)")
        if not any(n.endswith(SOURCE_SUFFIXES) for n in self.files):
            raise ValueError("Job.files has no C++ translation unit (.cpp/.cc/.cxx)")
        check_flags(self.flags, "Job.flags")
        if not set(self.private_units) <= set(self.files) or (self.private_units and self.compile_only):
            raise ValueError("Job.private_units must name files of the job, and needs a link (not compile_only)")
        if self.sanitize and any(f in ("-static", "-s") for f in self.flags):
            raise ValueError("Job.flags: -static and -s are refused with sanitize=True (the sanitizer runtime is a "
                             "shared library, and its hooks are checked in the binary's symbol tables)")
        if self.compile_only and self.tests:
            raise ValueError("Job.tests must be empty when compile_only=True")
        if not self.tests and not self.compile_only:
            raise ValueError("Job.tests is empty: give at least one TestCase (or compile_only=True)")

    @property
    def build_flags(self) -> tuple[str, ...]:
        """What g++ gets: the job's flags, plus the sanitizers' when `sanitize`."""
        return (*self.flags, *SANITIZE_FLAGS) if self.sanitize else self.flags

    def compile_key(self) -> str:
        """Content hash of what determines the binary: sources, flags and compile limits."""
        blob = json.dumps([sorted(self.files.items()), list(self.build_flags), asdict(self.compile_limits),
                           *([list(self.private_units)] if self.private_units else [])])
        return hashlib.sha256(blob.encode("utf-8", "surrogateescape")).hexdigest()

    def run_key(self) -> str:
        """Content hash of the whole job: identical jobs in a batch are executed once."""
        tests = [[t.stdin.hex(), t.expected_stdout, t.checker, list(t.args), t.abs_tol, t.rel_tol]
                 for t in self.tests]
        blob = json.dumps([self.compile_key(), tests, asdict(self.run_limits), self.stop_on_failure, self.sanitize])
        return hashlib.sha256(blob.encode("utf-8", "surrogateescape")).hexdigest()


@dataclass
class ExecResult:
    """Outcome of one process: the compiler, or the program on one test."""

    verdict: Verdict
    exit_code: int | None
    signal: int | None
    cpu_s: float
    wall_s: float
    memory_mb: float
    stdout: str  # decoded as UTF-8 with invalid bytes shown as \xNN escapes
    stderr: str
    stdout_truncated: bool
    stderr_truncated: bool
    detail: str = ""
    finding: SanitizerFinding | None = None  # sanitized runs only


@dataclass
class Result:
    """A job's verdict plus the compile outcome and one ExecResult per test that ran."""

    verdict: Verdict
    compile: ExecResult | None = None
    tests: list[ExecResult] = field(default_factory=list)
    tests_total: int = 0  # tests in the job (more than ran when stop_on_failure cut the run short)
    attempts: int = 1
    compile_cached: bool = False
    deduplicated: bool = False
    error: str = ""

    @property
    def finding(self) -> SanitizerFinding | None:
        """The first sanitizer finding among the tests that ran (sanitized jobs only)."""
        return next((t.finding for t in self.tests if t.finding is not None), None)

    @property
    def tests_passed(self) -> int:
        return sum(t.verdict is Verdict.OK for t in self.tests)

    def _headline(self) -> ExecResult | None:
        """The test that decided the verdict (first failure, else the last), or the compile."""
        for test in self.tests:
            if test.verdict is not Verdict.OK:
                return test
        return self.tests[-1] if self.tests else self.compile

    def to_json(self) -> dict:
        head = self._headline()
        return {
            "verdict": self.verdict.value,
            "exit_code": head.exit_code if head else None,
            "signal": head.signal if head else None,
            "wall_s": head.wall_s if head else 0.0,
            "cpu_s": head.cpu_s if head else 0.0,
            "memory_mb": head.memory_mb if head else 0.0,
            "stdout": head.stdout if head and head is not self.compile else "",
            "stderr": head.stderr if head and head is not self.compile else "",
            "stdout_truncated": bool(head and head is not self.compile and head.stdout_truncated),
            "compile_output": (self.compile.stdout + self.compile.stderr) if self.compile else "",
            "compile_wall_s": self.compile.wall_s if self.compile else 0.0,
            "detail": head.detail if head else self.error,
            "tests_passed": self.tests_passed,
            "tests_total": self.tests_total,
            "attempts": self.attempts,
            "compile_cached": self.compile_cached,
            "error": self.error,
            "sanitizer": asdict(self.finding) if self.finding else None,
        }
