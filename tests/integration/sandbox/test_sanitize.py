"""Sanitized jobs (Job.sanitize) on both backends: each planted bug is caught where it was planted, clean
programs are unaffected, memory stays bounded without RLIMIT_AS, and the hooks that could turn a finding into a
clean exit are refused."""

from __future__ import annotations

import pytest

from sandbox.types import Job, StageLimits, TestCase, Verdict

LIMITS = StageLimits(cpu_s=5, wall_s=10, memory_mb=256)

# Each bug sits on line 3 of main.cpp, in f(); but for the null dereference (a crash either way) the program
# prints the right answer (4) when run unsanitized.
PLANTED = {
    "heap-buffer-overflow": "int f(int n) {\n  int* p = new int[n]; for (int i = 0; i < n; i++) p[i] = i;\n"
                            "  volatile int s = p[n]; delete[] p; return n; }\n",
    "stack-buffer-overflow": "int f(int n) {\n  volatile int a[4] = {0, 1, 2, 3}; volatile int* q = a;\n"
                             "  volatile int s = q[n]; return n; }\n",
    "heap-use-after-free": "int f(int n) {\n  int* p = new int[n]; int* volatile q = p; delete[] p;\n"
                           "  volatile int s = q[0]; return n; }\n",
    "signed-integer-overflow": "int f(int n) {\n  volatile int big = 2147483647;\n"
                               "  volatile int s = big + n; return n; }\n",
    "null-pointer": "int f(int n) {\n  volatile int zero = 0; int* p = zero ? &n : nullptr;\n"
                    "  volatile int s = *p; return n; }\n",
}
MAIN = "\n#include <cstdio>\nint main() { int n; if (scanf(\"%d\", &n) != 1) return 2; printf(\"%d\\n\", f(n)); }\n"
KIND = {  # what each sanitizer calls it (a stack overflow of a small array is UBSan's bounds check or ASan's)
    "heap-buffer-overflow": {"heap-buffer-overflow", "object-size"},
    "stack-buffer-overflow": {"stack-buffer-overflow", "index-out-of-bounds", "object-size"},
    "heap-use-after-free": {"heap-use-after-free"},
    "signed-integer-overflow": {"signed-integer-overflow"},
    "null-pointer": {"null-pointer", "SEGV"},
}


def job(src: str, *tests: TestCase, sanitize: bool = True, limits: StageLimits = LIMITS) -> Job:
    return Job({"main.cpp": src}, tests=tests or (TestCase(b"4", "4"),), run_limits=limits, sanitize=sanitize)


@pytest.fixture
def pool(backend, make_pool):
    return make_pool(backend)


def test_each_planted_bug_is_caught_at_its_line(pool):
    names = list(PLANTED)
    plain = pool.run_batch([job(PLANTED[n] + MAIN, sanitize=False) for n in names if n != "null-pointer"])
    sanitized = pool.run_batch([job(PLANTED[n] + MAIN) for n in names])
    # Unsanitized, every one of them passes its test: the bug is invisible to the tests.
    assert [r.verdict for r in plain] == [Verdict.OK] * len(plain), [r.to_json()["detail"] for r in plain]
    for name, result in zip(names, sanitized):
        finding = result.finding
        assert result.verdict is Verdict.RUNTIME_ERROR, (name, result.to_json())
        assert finding is not None and finding.kind in KIND[name], (name, finding, result.tests[0].stderr[:2000])
        assert (finding.file, finding.line) == ("main.cpp", 3), (name, finding)
        assert finding.function.startswith("f("), (name, finding)
        assert result.to_json()["sanitizer"]["kind"] == finding.kind
        assert finding.kind in result.to_json()["detail"]


def test_clean_programs_are_unaffected(pool):
    clean = ("#include <bits/stdc++.h>\nusing namespace std;\n"
             "int main(){ int n; cin >> n; vector<long> v(n); iota(v.begin(), v.end(), 1); map<int,string> m;"
             " for (int i = 0; i < n; i++) m[i] = to_string(v[i]); long s = accumulate(v.begin(), v.end(), 0L);"
             " cout << s << ' ' << m[n-1] << endl; }\n")
    tests = (TestCase(b"4", "10 4"), TestCase(b"100", "5050 100"))
    plain, sanitized = pool.run_batch([job(clean, *tests, sanitize=False), job(clean, *tests)])
    assert plain.verdict is sanitized.verdict is Verdict.OK, sanitized.to_json()
    assert [t.stdout for t in plain.tests] == [t.stdout for t in sanitized.tests]
    assert sanitized.finding is None and sanitized.to_json()["sanitizer"] is None


def test_memory_is_bounded_without_an_address_space_limit(pool):
    """No RLIMIT_AS under ASan: a program that touches memory as fast as it can is still stopped near its
    limit (MEMORY_LIMIT), by the sanitizer's RSS watchdog or the worker's cgroup, and the worker serves on."""
    bomb = ("#include <cstdlib>\n#include <cstring>\n#include <sys/mman.h>\n"
            "int main(){ for(;;){ char* p = (char*)mmap(0, 1 << 24, 3, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);"
            " if (p == MAP_FAILED) return 3; memset(p, 1, 1 << 24); } }\n")
    heap = ("#include <cstdlib>\n#include <cstring>\n"
            "int main(){ for(;;){ char* p = (char*)malloc(1 << 20); if (!p) return 3; memset(p, 1, 1 << 20); } }\n")
    huge = "#include <vector>\nint main(){ std::vector<char> v(std::size_t(1) << 34); return v[5]; }\n"
    results = pool.run_batch([job(bomb), job(heap), job(huge)])
    for result in results:
        assert result.verdict is Verdict.MEMORY_LIMIT, (result.to_json(), result.compile and result.compile.stderr)
        assert result.finding is None
        # bounded: the sanitizer's limit (256 + 32 + 64 MB) plus what a 100 ms poll can miss
        assert result.tests[0].memory_mb < 1024, result.to_json()
    after = pool.run_batch([job(PLANTED["signed-integer-overflow"] + MAIN), job(MAIN.replace("f(n)", "n"))])
    assert after[0].finding is not None and after[1].verdict is Verdict.OK


HOOKS = {
    "on_error": 'extern "C" void __asan_on_error() { _exit(0); }',
    "death_callback": 'extern "C" void __sanitizer_set_death_callback(void (*)(void));\n'
                      'static void bye() { _exit(0); }\nstatic int armed = (__sanitizer_set_death_callback(bye), 0);',
    "default_options": 'extern "C" const char* __asan_default_options() { return "exitcode=0:halt_on_error=0"; }\n'
                       'extern "C" const char* __ubsan_default_options() { return "exitcode=0:halt_on_error=0"; }',
    "dlsym": '#include <dlfcn.h>\nstatic int armed = (((void (*)(void (*)(void)))dlsym(RTLD_DEFAULT,'
             ' "__sanitizer_set_death_callback"))(+[]{ _exit(0); }), 0);',
}


@pytest.mark.parametrize("hook", list(HOOKS))
def test_a_program_cannot_turn_a_finding_into_a_clean_exit(pool, hook):
    """An attacker who read sandbox/sanitizer.py: each way to exit 0 after a finding fails the build or the
    run, never passes."""
    src = "#include <unistd.h>\n" + HOOKS[hook] + "\n" + PLANTED["heap-buffer-overflow"] + MAIN
    (result,) = pool.run_batch([job(src)])
    assert result.verdict is not Verdict.OK, result.to_json()
    if result.verdict is Verdict.COMPILE_ERROR:
        assert "refused in sanitized jobs" in result.to_json()["compile_output"], result.to_json()
    else:  # the environment's options win over __asan_default_options
        assert result.finding is not None and result.finding.kind in KIND["heap-buffer-overflow"], result.to_json()
