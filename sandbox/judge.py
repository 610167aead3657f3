"""Pure functions that turn the runner's raw process outcomes into verdicts and results."""

from __future__ import annotations

import base64
import errno
import signal

from sandbox.checkers import check
from sandbox.sanitizer import RESOURCE_KINDS, finding_of
from sandbox.types import ExecResult, Job, Result, SanitizerFinding, StageLimits, Verdict

DISPLAY_BYTES = 16 << 10  # how much stdout/stderr/compiler output a Result carries
# An abnormal end with peak memory this close to the limit is reported as MEMORY_LIMIT.
MEMORY_NEAR_LIMIT = 0.9
_OOM_MARKERS = ("std::bad_alloc", "Cannot allocate memory", "out of memory")


def decode_output(raw: bytes, limit: int = DISPLAY_BYTES) -> tuple[str, bool]:
    """Printable text from arbitrary bytes: invalid UTF-8 shows as \\xNN; flags truncation."""
    truncated = len(raw) > limit
    return raw[:limit].decode("utf-8", errors="backslashreplace"), truncated


def classify_run(outcome: dict, limits: StageLimits) -> tuple[Verdict, str]:
    """Verdict of one run before any output check. Order matters: our own kills decide first."""
    killed_for = outcome.get("killed_for")
    sig = outcome.get("signal")
    if killed_for == "output_limit":
        return Verdict.OUTPUT_LIMIT, f"output exceeded {limits.max_output_bytes} bytes"
    if killed_for == "wall_limit":
        return Verdict.TIME_LIMIT, f"wall time exceeded {limits.wall_s}s"
    if outcome.get("exec_errno") is not None:
        code = outcome["exec_errno"]
        if code in (errno.ENOMEM, errno.E2BIG):
            return Verdict.MEMORY_LIMIT, "program image does not fit the memory limit"
        return Verdict.RUNTIME_ERROR, f"exec failed: {errno.errorcode.get(code, code)}"
    # cpu_s is the whole stage's (every process, see runner.execute), compared on a clean exit too.
    if sig == signal.SIGXCPU or outcome["cpu_s"] > limits.cpu_s:
        return Verdict.TIME_LIMIT, f"CPU time exceeded {limits.cpu_s}s"
    if sig == signal.SIGXFSZ:
        return Verdict.OUTPUT_LIMIT, f"file size exceeded {limits.max_file_mb} MB"
    if outcome.get("exit_code") == 0:
        return Verdict.OK, ""
    stderr = base64.b64decode(outcome.get("stderr_b64", ""))[-4096:].decode("utf-8", "replace")
    near_limit = outcome.get("memory_mb", 0.0) >= MEMORY_NEAR_LIMIT * limits.memory_mb
    if near_limit or any(m in stderr for m in _OOM_MARKERS) or sig == signal.SIGKILL:
        # SIGKILL we did not send comes from the kernel: the OOM killer or a failed exec of a huge image.
        return Verdict.MEMORY_LIMIT, f"memory limit {limits.memory_mb} MB"
    if sig is not None:
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
        return Verdict.RUNTIME_ERROR, f"killed by {name}"
    return Verdict.RUNTIME_ERROR, f"exit code {outcome.get('exit_code')}"


def classify_sanitized(outcome: dict, job: Job) -> tuple[Verdict, str, SanitizerFinding | None] | None:
    """A sanitized run that ended on a finding: RUNTIME_ERROR with the finding, or MEMORY_LIMIT when the
    sanitizer ran out of memory (its limits stand in for RLIMIT_AS, see sandbox.sanitizer). None otherwise."""
    stderr = base64.b64decode(outcome.get("stderr_b64", "")).decode("utf-8", "replace")
    finding = finding_of(outcome, stderr, frozenset(job.files))
    if finding is None:
        return None
    if finding.kind in RESOURCE_KINDS:
        return Verdict.MEMORY_LIMIT, f"memory limit {job.run_limits.memory_mb} MB ({finding.kind})", None
    return Verdict.RUNTIME_ERROR, finding.describe(), finding


def exec_result(outcome: dict, verdict: Verdict, detail: str, finding: SanitizerFinding | None = None) -> ExecResult:
    stdout, out_trunc = decode_output(base64.b64decode(outcome.get("stdout_b64", "")))
    stderr, err_trunc = decode_output(base64.b64decode(outcome.get("stderr_b64", "")))
    return ExecResult(
        verdict=verdict, exit_code=outcome.get("exit_code"), signal=outcome.get("signal"),
        cpu_s=outcome.get("cpu_s", 0.0), wall_s=outcome.get("wall_s", 0.0),
        memory_mb=outcome.get("memory_mb", 0.0), stdout=stdout, stderr=stderr,
        stdout_truncated=out_trunc or outcome.get("output_bytes", 0) > len(stdout.encode()),
        stderr_truncated=err_trunc, detail=detail, finding=finding,
    )


def compile_is_deterministic(outcome: dict, limits: StageLimits) -> bool:
    """May this compile outcome be reused for the same sources? A binary, yes. A compile error only when the
    compiler itself reported it, exited normally, and stayed well inside its time limits: a compile that ran
    out of time under load (or was killed) says nothing about the next try."""
    if outcome.get("exit_code") == 0 and not outcome.get("killed_for"):
        return True
    return (outcome.get("killed_for") is None and outcome.get("signal") is None
            and outcome.get("exit_code") is not None
            and float(outcome.get("cpu_s", 0.0)) < 0.5 * limits.cpu_s
            and float(outcome.get("wall_s", 0.0)) < 0.5 * limits.wall_s)


def judge_compile(outcome: dict) -> ExecResult:
    ok = outcome.get("exit_code") == 0 and not outcome.get("killed_for")
    detail = {"wall_limit": "compile time limit", "output_limit": "compiler output limit"}.get(
        outcome.get("killed_for") or "", ""
    )
    if not ok and not detail and outcome.get("signal"):
        detail = f"compiler killed by signal {outcome['signal']}"
    return exec_result(outcome, Verdict.OK if ok else Verdict.COMPILE_ERROR, detail)


def judge_job(job: Job, reply: dict, compile_result: ExecResult | None) -> Result:
    """Combine a compile outcome and the runner's per-test outcomes into the job's Result."""
    if compile_result is not None and compile_result.verdict is not Verdict.OK:
        return Result(Verdict.COMPILE_ERROR, compile=compile_result, tests_total=len(job.tests))
    tests: list[ExecResult] = []
    for test, outcome in zip(job.tests, reply["runs"]):
        sanitized = classify_sanitized(outcome, job) if job.sanitize else None
        verdict, detail, finding = sanitized or (*classify_run(outcome, job.run_limits), None)
        if verdict is Verdict.OK and test.expected_stdout is not None:
            actual = base64.b64decode(outcome["stdout_b64"]).decode("utf-8", errors="replace")
            if not check(test.checker, actual, test.expected_stdout, abs_tol=test.abs_tol, rel_tol=test.rel_tol):
                verdict, detail = Verdict.WRONG_ANSWER, f"output differs ({test.checker} checker)"
        tests.append(exec_result(outcome, verdict, detail, finding))
        if job.stop_on_failure and verdict is not Verdict.OK:
            break
    failed = [t.verdict for t in tests if t.verdict is not Verdict.OK]
    if len(tests) < len(job.tests) and not failed:
        raise ValueError("runner returned fewer runs than tests without a failure")
    return Result(failed[0] if failed else Verdict.OK, compile=compile_result, tests=tests,
                  tests_total=len(job.tests))
