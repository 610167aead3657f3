"""Every verdict, and each limit enforced within tolerance, on both backends (real jails, real g++)."""

from __future__ import annotations

import pytest

from sandbox.types import Job, StageLimits, TestCase, Verdict

LIMITS = StageLimits(cpu_s=1, wall_s=3, memory_mb=256, max_processes=8, max_output_bytes=10_000)


def job(src: str, *tests: TestCase, limits: StageLimits = LIMITS, **kw) -> Job:
    return Job({"main.cpp": src}, tests=tests or (TestCase(),), run_limits=limits, **kw)


ALLOC = """#include <cstdlib>
#include <cstring>
#include <cstdio>
int main(){ size_t mb; if(scanf("%zu",&mb)!=1) return 2; long sum=0;
for(size_t i=0;i<mb;i++){ char*p=(char*)malloc(1<<20); if(!p) return 3; memset(p,7,1<<20); sum+=p[i%100]; }
printf("%ld",sum); }"""
PRINT_N = """#include <cstdio>
int main(){ long n; if(scanf("%ld",&n)!=1) return 2; for(long i=0;i<n;i++) putchar('x'); }"""
FORK_N = """#include <unistd.h>
#include <cstdio>
#include <sys/wait.h>
int main(){ int n; if(scanf("%d",&n)!=1) return 2; int ok=0;
for(int i=0;i<n;i++){ pid_t p=fork(); if(p==0){ sleep(1); _exit(0);} if(p>0) ok++; }
printf("%d",ok); while(wait(nullptr)>0){} }"""


@pytest.fixture
def pool(backend, make_pool):
    return make_pool(backend)


def test_each_verdict(pool):
    cases = {
        Verdict.OK: job("#include <cstdio>\nint main(){puts(\"hi\");}", TestCase(expected_stdout="hi")),
        Verdict.WRONG_ANSWER: job("#include <cstdio>\nint main(){puts(\"ho\");}", TestCase(expected_stdout="hi")),
        Verdict.COMPILE_ERROR: job("int main(){ return undefined_name; }"),
        Verdict.RUNTIME_ERROR: job("int main(){ volatile int* p = nullptr; return *p; }"),
        Verdict.TIME_LIMIT: job("int main(){ volatile long x=0; for(;;) x++; }"),
        Verdict.MEMORY_LIMIT: job(ALLOC, TestCase(b"400")),
        Verdict.OUTPUT_LIMIT: job(PRINT_N, TestCase(b"100000")),
    }
    results = pool.run_batch(list(cases.values()))
    assert {v: r.verdict for v, r in zip(cases, results)} == {v: v for v in cases}
    assert "undefined_name" in results[2].to_json()["compile_output"]
    assert results[3].tests[0].signal == 11


def test_exit_code_and_abort_are_runtime_errors(pool):
    exit3, abort = pool.run_batch([job("int main(){ return 3; }"),
                                   job("#include <cstdlib>\nint main(){ abort(); }")])
    assert (exit3.verdict, exit3.tests[0].exit_code) == (Verdict.RUNTIME_ERROR, 3)
    assert (abort.verdict, abort.tests[0].signal) == (Verdict.RUNTIME_ERROR, 6)


def test_cpu_limit_within_tolerance(pool):
    result = pool.run(job("int main(){ volatile long x=0; for(;;) x++; }"))
    assert result.verdict is Verdict.TIME_LIMIT
    assert LIMITS.cpu_s * 0.95 <= result.tests[0].cpu_s <= LIMITS.cpu_s + 1.2


def test_wall_limit_within_tolerance(pool):
    result = pool.run(job("#include <unistd.h>\nint main(){ sleep(100); }"))
    assert result.verdict is Verdict.TIME_LIMIT
    assert LIMITS.wall_s <= result.tests[0].wall_s <= LIMITS.wall_s + 0.5


def test_memory_limit_within_tolerance(pool):
    under, over = pool.run_batch([job(ALLOC, TestCase(b"200")), job(ALLOC, TestCase(b"300"))])
    assert under.verdict is Verdict.OK and 200 <= under.tests[0].memory_mb <= 256
    assert over.verdict is Verdict.MEMORY_LIMIT


def test_output_limit_is_exact(pool):
    at, over = pool.run_batch([job(PRINT_N, TestCase(b"10000")), job(PRINT_N, TestCase(b"10001"))])
    assert at.verdict is Verdict.OK and len(at.tests[0].stdout) == 10_000
    assert over.verdict is Verdict.OUTPUT_LIMIT and over.tests[0].stdout_truncated


def test_process_limit(pool):
    few, many = pool.run_batch([job(FORK_N, TestCase(b"3")), job(FORK_N, TestCase(b"50"))])
    assert few.verdict is Verdict.OK and few.tests[0].stdout == "3"
    # The runner counts against the per-uid limit too (and bwrap's monitor): allow that slack.
    assert many.verdict is Verdict.OK and int(many.tests[0].stdout) <= LIMITS.max_processes + 1


def test_compile_once_run_many_tests_with_partial_credit(pool):
    src = "#include <iostream>\nint main(){long a,b;std::cin>>a>>b;std::cout<<a*b<<'\\n';}"
    tests = (TestCase(b"2 3", "6"), TestCase(b"4 5", "21"), TestCase(b"-1 7", "-7"))
    result = pool.run(job(src, *tests))
    assert result.verdict is Verdict.WRONG_ANSWER
    assert [t.verdict for t in result.tests] == [Verdict.OK, Verdict.WRONG_ANSWER, Verdict.OK]
    assert (result.tests_passed, result.tests_total) == (2, 3)
    stopped = pool.run(job(src, *tests, stop_on_failure=True))
    assert len(stopped.tests) == 2 and stopped.tests_total == 3


def test_multiple_files_flags_and_link_libraries(pool):
    files = {"main.cpp": '#include "lib.h"\n#include <openssl/md5.h>\n#include <boost/any.hpp>\n#include <cstdio>\n'
             'int main(){ unsigned char d[16]; MD5((const unsigned char*)"a",1,d); boost::any x = twice(21);'
             ' printf("%d %02x", boost::any_cast<int>(x), d[0]); }',
             "lib.h": "int twice(int);", "lib.cpp": '#include "lib.h"\nint twice(int x){ return 2*x; }'}
    result = pool.run(Job(files, flags=("-std=c++20", "-O2", "-lcrypto"), tests=(TestCase(expected_stdout="42 0c"),)))
    assert result.verdict is Verdict.OK, result.to_json()


def test_state_does_not_persist_between_jobs(backend, make_pool):
    pool = make_pool(backend, num_workers=1)
    writer = job("""#include <cstdio>
#include <initializer_list>
#include <sys/shm.h>
#include <unistd.h>
int main(){ for(const char*p: {"/tmp/left","/work/left","/dev/shm/left"}){ FILE*f=fopen(p,"w"); if(f){fputs("x",f);fclose(f);} }
 int id=shmget(0x5eed,4096,IPC_CREAT|0666); printf("%d",id>=0);
 if(fork()==0){ setsid(); for(;;) pause(); } }""")
    reader = job("""#include <cstdio>
#include <initializer_list>
#include <dirent.h>
#include <cstring>
#include <sys/shm.h>
#include <unistd.h>
int main(){ int found=0; for(const char*p: {"/tmp/left","/work/left","/dev/shm/left"}) if(FILE*f=fopen(p,"r")){found++;fclose(f);}
 if(shmget(0x5eed,0,0)>=0) found++;
 DIR*d=opendir("/proc"); while(dirent*e=readdir(d)) if(e->d_name[0]>'0'&&e->d_name[0]<='9'){ int pid=atoi(e->d_name);
   if(pid!=1 && pid!=getpid()) found++; }
 printf("%s", found ? "LEFTOVER" : "CLEAN"); }""".replace("#include <cstring>", "#include <cstring>\n#include <cstdlib>"))
    assert pool.run(writer).verdict is Verdict.OK
    assert pool.run(reader).tests[0].stdout == "CLEAN"


def test_identical_jobs_run_once_and_binaries_are_cached(pool):
    src = "#include <cstdio>\nint main(){int a;scanf(\"%d\",&a);printf(\"%d\",a+1);}"
    jobs = [job(src, TestCase(b"1", "2"))] * 4 + [job(src, TestCase(b"5", "6"))] * 2
    results = pool.run_batch(jobs)
    assert all(r.verdict is Verdict.OK for r in results)
    assert pool.stats.compiles == 1 and pool.stats.executed == 2 and pool.stats.deduplicated == 4
    again = pool.run(job(src, TestCase(b"9", "10")))
    assert again.verdict is Verdict.OK and again.compile_cached and pool.stats.compiles == 1


def test_compile_errors_are_cached_too(pool):
    bad = job("int main(){ return nope; }")
    first, second = pool.run(bad), pool.run(bad)
    assert first.verdict is second.verdict is Verdict.COMPILE_ERROR
    assert second.compile_cached and pool.stats.compiles == 1


def test_precompiled_header_is_used(pool):
    src = "#include <bits/stdc++.h>\nint main(){ std::vector<int> v{3,1,2}; std::sort(v.begin(), v.end()); std::cout<<v[0]; }"
    result = pool.run(job(src, TestCase(expected_stdout="1")))
    assert result.verdict is Verdict.OK
    assert result.compile.wall_s < 1.5  # ~2 s without the PCH on this class of machine


def test_a_run_cannot_replace_the_binary_for_later_tests(pool):
    """Test 1 swaps /work/prog for a script that prints test 2's answer; test 2 must run the real binary."""
    src = """#include <cstdio>
#include <sys/stat.h>
#include <unistd.h>
int main(){ int n; if(scanf("%d",&n)!=1) return 2;
 if(n==1){ unlink("/work/prog"); FILE*f=fopen("/work/prog","w"); if(f){ fputs("#!/bin/sh\\necho 42\\n",f); fclose(f);
   chmod("/work/prog",0755);} }
 printf("%d\\n", n); }"""
    result = pool.run(job(src, TestCase(b"1", "1"), TestCase(b"2", "42")))
    assert [t.verdict for t in result.tests] == [Verdict.OK, Verdict.WRONG_ANSWER]
    assert result.tests[1].stdout == "2\n"
