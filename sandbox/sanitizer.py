"""Sanitized runs (Job.sanitize): the runtime options each run gets, and the finding read back from its report.

Why options and not RLIMIT_AS: AddressSanitizer reserves terabytes of shadow address space at start-up, so a
sanitized program cannot run under an address-space limit at all. Its memory is bounded instead by
  1. `hard_rss_limit_mb`: ASan's own watchdog ends the process once its resident memory passes the task's
     limit plus the shadow of that much memory (1/8) plus a fixed allowance for the runtime (`rss_limit_mb`);
     it polls, so a fast allocator can overshoot by what it touches in ~100 ms;
  2. the worker's cgroup (`memory.max`: Docker always, bubblewrap where the host delegates one, see
     sandbox/cgroup.py), which bounds the overshoot: the kernel then kills the program (MEMORY_LIMIT).
A single allocation larger than the limit fails as under RLIMIT_AS (`max_allocation_size_mb`,
`allocator_may_return_null=1`: malloc returns NULL, `new` throws std::bad_alloc).

Every finding is fatal (`-fno-sanitize-recover=all`, `halt_on_error=1`) and ends the process with
SANITIZER_EXIT_CODE, the signal the judge trusts; the report on stderr only names the finding. The options
are given in the environment, which the runtimes read after a program's own `__asan_default_options`; the
callbacks that could still change the outcome are refused in the binary (sandbox.runner.SANITIZER_HOOKS).
"""

from __future__ import annotations

import re

from sandbox.types import SanitizerFinding, StageLimits

SANITIZER_EXIT_CODE = 86
RUNTIME_ALLOWANCE_MB = 64  # the sanitizer runtime's own resident memory, quarantine included
QUARANTINE_MB = 16  # freed memory held back to catch use-after-free (ASan's default, 256 MB, is most of a limit)
# Kinds that mean "out of memory", judged MEMORY_LIMIT like the same program without sanitizers.
RESOURCE_KINDS = frozenset({"rss-limit-exceeded", "out-of-memory", "allocation-size-too-big", "malloc-limit-exceeded",
                            "calloc-overflow", "pvalloc-overflow", "reallocarray-overflow"})


def rss_limit_mb(memory_mb: int) -> int:
    """Resident memory a sanitized run may reach: the task's limit, its shadow (1/8), the runtime's allowance."""
    return memory_mb + memory_mb // 8 + RUNTIME_ALLOWANCE_MB


def runtime_env(limits: StageLimits) -> dict[str, str]:
    """ASAN_OPTIONS and UBSAN_OPTIONS for a run under `limits` (merged into the job's environment)."""
    common = {"exitcode": SANITIZER_EXIT_CODE, "halt_on_error": 1, "abort_on_error": 0, "color": "never",
              "strip_path_prefix": "/work/src/", "print_summary": 1, "disable_coredump": 1}
    asan = {**common,
            # LeakSanitizer stops the world with ptrace, which the seccomp filter denies; a leak is not UB.
            "detect_leaks": 0,
            "hard_rss_limit_mb": rss_limit_mb(limits.memory_mb),
            "max_allocation_size_mb": limits.memory_mb, "allocator_may_return_null": 1,
            "quarantine_size_mb": QUARANTINE_MB, "malloc_context_size": 8,
            "detect_stack_use_after_return": 0, "print_legend": 0}
    ubsan = {**common, "print_stacktrace": 1}
    return {"ASAN_OPTIONS": _options(asan), "UBSAN_OPTIONS": _options(ubsan)}


def _options(values: dict) -> str:
    return ":".join(f"{k}={v}" for k, v in values.items())


_ASAN_HEADER = re.compile(r"^==\d+==ERROR: AddressSanitizer: (.+)$", re.M)
_ASAN_SUMMARY = re.compile(r"^SUMMARY: AddressSanitizer: (\S+)", re.M)
_RSS = re.compile(r"^==\d+==AddressSanitizer: hard rss limit exhausted", re.M)
_UBSAN = re.compile(r"^(?:/work/src/)?([^\s:]+):(\d+):\d+: runtime error: (.+)$", re.M)
_FRAME = re.compile(r"^\s*#\d+ 0x[0-9a-f]+ in (.+) (?:/work/src/)?([^\s:/]+):(\d+)(?::\d+)?$", re.M)
# UBSan's message -> a stable slug, first match wins (its SUMMARY line is not printed by every release).
_UBSAN_KINDS = (
    ("signed integer overflow", "signed-integer-overflow"),
    ("negation of", "signed-integer-overflow"),
    ("null pointer", "null-pointer"),
    ("out of bounds", "index-out-of-bounds"),
    ("division by zero", "division-by-zero"),
    ("division of", "signed-integer-overflow"),
    ("shift", "invalid-shift"),
    ("misaligned", "misaligned-access"),
    ("insufficient space for an object", "object-size"),
    ("reached the end of a value-returning function", "missing-return"),
    ("unreachable", "unreachable"),
    ("is not a valid value for type", "invalid-value"),
    ("is outside the range of representable values", "float-cast-overflow"),
    ("pointer overflow", "pointer-overflow"),
    ("applying non-zero offset", "pointer-overflow"),
    ("vptr", "dynamic-type-mismatch"),
    ("which does not point to an object of type", "dynamic-type-mismatch"),
    ("variable length array bound", "vla-bound"),
)


def ubsan_kind(message: str) -> str:
    return next((slug for text, slug in _UBSAN_KINDS if text in message), "undefined-behavior")


def parse_report(stderr: str, sources: frozenset[str] | set[str]) -> SanitizerFinding | None:
    """The finding a sanitizer report on `stderr` describes, located at its first frame in one of `sources`
    (the job's file names); None when no report is there."""
    def first_frame(after: int) -> tuple[str, int, str]:
        for m in _FRAME.finditer(stderr, after):
            if m.group(2) in sources:
                return m.group(2), int(m.group(3)), _short(m.group(1))
        return "", 0, ""

    asan, ubsan = _ASAN_HEADER.search(stderr), _UBSAN.search(stderr)
    if _RSS.search(stderr) and not asan:
        return SanitizerFinding("AddressSanitizer", "rss-limit-exceeded", "hard rss limit exhausted")
    if asan and (not ubsan or asan.start() < ubsan.start()):
        summary = _ASAN_SUMMARY.search(stderr, asan.end())
        kind = summary.group(1) if summary else asan.group(1).split()[0]
        file, line, func = first_frame(asan.end())
        return SanitizerFinding("AddressSanitizer", kind, _short(asan.group(1)), file, line, func)
    if ubsan:
        file, line, message = ubsan.group(1), int(ubsan.group(2)), ubsan.group(3).strip()
        frame = _FRAME.search(stderr, ubsan.end())
        func = _short(frame.group(1)) if frame else ""
        if file not in sources:  # in a header: locate it by the first frame in the job's code instead
            file, line, func = first_frame(ubsan.end())
        return SanitizerFinding("UndefinedBehaviorSanitizer", ubsan_kind(message), _short(message), file, line, func)
    return None


def finding_of(outcome: dict, stderr: str, sources: frozenset[str] | set[str]) -> SanitizerFinding | None:
    """A sanitized run's finding: only a run that ended with SANITIZER_EXIT_CODE has one (a report printed by
    a program that then exits normally is its own output). The exit status without a readable report (the
    program closed stderr first) is still a finding, of unknown kind."""
    if outcome.get("killed_for") or outcome.get("exit_code") != SANITIZER_EXIT_CODE:
        return None
    return parse_report(stderr, sources) or SanitizerFinding("sanitizer", "unknown",
                                                             f"exit status {SANITIZER_EXIT_CODE} without a report")


def _short(text: str, limit: int = 160) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."
