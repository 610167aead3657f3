"""Pure parts of sanitized jobs: runtime options, report parsing (real GCC 12 reports), the hook check, the
verdict, and the job's flags."""

from __future__ import annotations

import base64

import pytest

from sandbox.image import SANITIZE_FLAGS
from sandbox.judge import judge_job
from sandbox.runner import sanitizer_hooks_in
from sandbox.sanitizer import SANITIZER_EXIT_CODE, finding_of, parse_report, rss_limit_mb, runtime_env, ubsan_kind
from sandbox.types import Job, StageLimits, TestCase, Verdict

# Verbatim (but for elided lines) from g++ 12.2 -fsanitize=address,undefined runs with strip_path_prefix.
ASAN_HEAP = """=================================================================
==18001==ERROR: AddressSanitizer: heap-buffer-overflow on address 0x602000000018 at pc 0x5623efd92881 bp 0x7ffdb1f4a170 sp 0x7ffdb1f4a168
READ of size 4 at 0x602000000018 thread T0
    #0 0x5623efd92880 in g(std::vector<int, std::allocator<int> >&, int) hdr.cpp:3
    #1 0x5623efd92471 in main hdr.cpp:4
    #2 0x7f23c8645249 in __libc_start_call_main ../sysdeps/nptl/libc_start_call_main.h:58

0x602000000018 is located 0 bytes to the right of 8-byte region [0x602000000010,0x602000000018)
allocated by thread T0 here:
    #0 0x7f23c88b94c8 in operator new(unsigned long) ../../../../src/libsanitizer/asan/asan_new_delete.cpp:95
    #1 0x5623efd92348 in std::__new_allocator<int>::allocate(unsigned long, void const*) /usr/include/c++/12/bits/new_allocator.h:137
    #8 0x5623efd92348 in main hdr.cpp:4

SUMMARY: AddressSanitizer: heap-buffer-overflow hdr.cpp:3 in g(std::vector<int, std::allocator<int> >&, int)
"""
ASAN_UAF_IN_LIBRARY = """==3280==ERROR: AddressSanitizer: heap-use-after-free on address 0x602000000034 at pc 0x55f59d9d4ad1
READ of size 4 at 0x602000000034 thread T0
    #0 0x7fefcc6ba038 in std::vector<int>::size() const /usr/include/c++/12/bits/stl_vector.h:919
    #1 0x55f59d9d4ad0 in main solution.cpp:8
SUMMARY: AddressSanitizer: heap-use-after-free /usr/include/c++/12/bits/stl_vector.h:919 in size
"""
UBSAN_SHIFT = """shift.cpp:3:33: runtime error: shift exponent 41 is too large for 32-bit type 'int'
    #0 0x55d1d687f0e6 in sh(int, int) shift.cpp:3
    #1 0x55d1d687f124 in main shift.cpp:4
"""
UBSAN_IN_HEADER = """/usr/include/c++/12/bits/stl_algobase.h:255:15: runtime error: load of null pointer of type 'const int'
    #0 0x55c1143f0a33 in std::max<int>(int const&, int const&) /usr/include/c++/12/bits/stl_algobase.h:255
    #1 0x55c1143f0b10 in best(int const*) solution.cpp:12
"""
RSS = "==10==AddressSanitizer: hard rss limit exhausted (352Mb vs 459Mb)\n==10==Process memory map follows:\n"


def test_asan_report_names_the_kind_and_the_first_frame_in_the_jobs_code():
    f = parse_report(ASAN_HEAP, {"hdr.cpp"})
    assert (f.tool, f.kind, f.file, f.line) == ("AddressSanitizer", "heap-buffer-overflow", "hdr.cpp", 3)
    assert f.function == "g(std::vector<int, std::allocator<int> >&, int)"
    assert f.describe().startswith("AddressSanitizer: heap-buffer-overflow at hdr.cpp:3 in g(")
    # the access was in a library header: the first frame of ours is the caller
    f = parse_report(ASAN_UAF_IN_LIBRARY, {"solution.cpp", "tests.cpp"})
    assert (f.kind, f.file, f.line, f.function) == ("heap-use-after-free", "solution.cpp", 8, "main")


def test_ubsan_report_kind_location_and_function():
    f = parse_report(UBSAN_SHIFT, {"shift.cpp"})
    assert (f.tool, f.kind, f.file, f.line, f.function) == ("UndefinedBehaviorSanitizer", "invalid-shift",
                                                            "shift.cpp", 3, "sh(int, int)")
    assert "shift exponent 41" in f.message
    f = parse_report(UBSAN_IN_HEADER, {"solution.cpp"})
    assert (f.kind, f.file, f.line, f.function) == ("null-pointer", "solution.cpp", 12, "best(int const*)")


@pytest.mark.parametrize("message,kind", [
    ("signed integer overflow: 2 + 2147483647 cannot be represented in type 'int'", "signed-integer-overflow"),
    ("negation of -2147483648 cannot be represented in type 'int'", "signed-integer-overflow"),
    ("index 4 out of bounds for type 'int [4]'", "index-out-of-bounds"),
    ("load of null pointer of type 'int'", "null-pointer"),
    ("member access within null pointer of type 'struct S'", "null-pointer"),
    ("division by zero", "division-by-zero"),
    ("load of address 0x602000000040 with insufficient space for an object of type 'int'", "object-size"),
    ("execution reached the end of a value-returning function without returning a value", "missing-return"),
    ("load of value 7, which is not a valid value for type 'bool'", "invalid-value"),
    ("something new", "undefined-behavior"),
])
def test_ubsan_kinds(message, kind):
    assert ubsan_kind(message) == kind


def test_no_report_and_resource_reports():
    assert parse_report("segfault\n#0 0x1 in main main.cpp:3\n", {"main.cpp"}) is None
    assert parse_report(RSS, {"main.cpp"}).kind == "rss-limit-exceeded"


def outcome(code, stderr=b"", **kw) -> dict:
    return {"exit_code": code, "signal": None, "killed_for": None, "exec_errno": None, "cpu_s": 0.01,
            "wall_s": 0.01, "memory_mb": 30.0, "stdout_b64": base64.b64encode(b"4\n").decode(),
            "stderr_b64": base64.b64encode(stderr).decode(), "output_bytes": 2, **kw}


def test_only_the_sanitizer_exit_status_makes_a_finding():
    """A report a program prints and then exits 0 from is its output; the exit status without a report
    (stderr closed first) is still a finding."""
    assert finding_of(outcome(0), ASAN_HEAP, {"hdr.cpp"}) is None
    assert finding_of(outcome(1), ASAN_HEAP, {"hdr.cpp"}) is None
    assert finding_of(outcome(SANITIZER_EXIT_CODE, killed_for="wall_limit"), ASAN_HEAP, {"hdr.cpp"}) is None
    assert finding_of(outcome(SANITIZER_EXIT_CODE), ASAN_HEAP, {"hdr.cpp"}).kind == "heap-buffer-overflow"
    assert finding_of(outcome(SANITIZER_EXIT_CODE), "", {"hdr.cpp"}).kind == "unknown"


def job(sanitize=True, **kw) -> Job:
    return Job({"hdr.cpp": "int main(){}"}, tests=(TestCase(expected_stdout="4"),), sanitize=sanitize,
               run_limits=StageLimits(memory_mb=256), **kw)


def test_judged_verdicts():
    reply = {"runs": [outcome(SANITIZER_EXIT_CODE, ASAN_HEAP.encode())]}
    result = judge_job(job(), reply, None)
    assert result.verdict is Verdict.RUNTIME_ERROR and result.finding.kind == "heap-buffer-overflow"
    assert result.to_json()["sanitizer"]["line"] == 3 and "heap-buffer-overflow at hdr.cpp:3" in result.to_json()["detail"]
    oom = judge_job(job(), {"runs": [outcome(SANITIZER_EXIT_CODE, RSS.encode())]}, None)
    assert (oom.verdict, oom.finding) == (Verdict.MEMORY_LIMIT, None)
    # the same reply for an unsanitized job: an ordinary non-zero exit, no finding
    plain = judge_job(job(sanitize=False), reply, None)
    assert (plain.verdict, plain.finding, plain.to_json()["sanitizer"]) == (Verdict.RUNTIME_ERROR, None, None)


def test_runtime_options_hand_values():
    assert rss_limit_mb(256) == 256 + 32 + 64
    env = runtime_env(StageLimits(memory_mb=512))
    asan = dict(kv.split("=", 1) for kv in env["ASAN_OPTIONS"].split(":"))
    ubsan = dict(kv.split("=", 1) for kv in env["UBSAN_OPTIONS"].split(":"))
    assert asan["hard_rss_limit_mb"] == str(512 + 64 + 64) and asan["max_allocation_size_mb"] == "512"
    for opts in (asan, ubsan):
        assert (opts["exitcode"], opts["halt_on_error"]) == (str(SANITIZER_EXIT_CODE), "1")
    assert asan["detect_leaks"] == "0" and asan["allocator_may_return_null"] == "1"


def test_sanitize_flags_keys_and_refusals():
    plain, sanitized = job(sanitize=False), job()
    assert sanitized.build_flags == (*plain.flags, *SANITIZE_FLAGS) and plain.build_flags == plain.flags
    assert sanitized.compile_key() != plain.compile_key() and sanitized.run_key() != plain.run_key()
    for flag in ("-static", "-s"):
        with pytest.raises(ValueError, match="refused with sanitize=True"):
            job(flags=("-O2", flag))
    with pytest.raises(ValueError, match="sanitizers are a job option"):
        job(sanitize=False, flags=("-O2", "-fsanitize=address"))


READELF = """
Symbol table '.dynsym' contains 3 entries:
   Num:    Value          Size Type    Bind   Vis      Ndx Name
     3: 0000000000000000     0 FUNC    GLOBAL DEFAULT  UND __asan_report_load4
    20: 00000000000011f9    19 FUNC    GLOBAL DEFAULT   15 __asan_on_error
    21: 0000000000000000     0 FUNC    GLOBAL DEFAULT  UND dlsym@GLIBC_2.34 (3)
    22: 0000000000000000     0 FUNC    GLOBAL DEFAULT  UND __ubsan_handle_add_overflow_abort
"""


def test_hook_check_reads_every_table_and_version():
    assert sanitizer_hooks_in(READELF) == ["__asan_on_error", "dlsym"]
    assert sanitizer_hooks_in(READELF.replace("__asan_on_error", "my_on_error").replace("dlsym", "printf")) == []
