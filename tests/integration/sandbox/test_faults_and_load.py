"""Fault injection (a jail killed mid-batch) and load (hundreds of jobs): every job answered exactly once,
SANDBOX_ERROR only when retries run out, nothing leaked."""

from __future__ import annotations

import threading
import time

import pytest

from sandbox.types import Job, StageLimits, TestCase, Verdict

SLOW_ECHO = """#include <cstdio>
#include <unistd.h>
int main(){ long x; if(scanf("%ld",&x)!=1) return 2; usleep(300000); printf("%ld",x*x); }"""
LIMITS = StageLimits(cpu_s=2, wall_s=5)


def echo_jobs(n: int) -> list[Job]:
    return [Job({"main.cpp": SLOW_ECHO}, tests=(TestCase(f"{i}".encode(), str(i * i)),), run_limits=LIMITS)
            for i in range(n)]


def kill_a_worker_after(pool, delay_s: float) -> threading.Thread:
    def killer() -> None:
        time.sleep(delay_s)
        pool.workers[0].kill()  # the same abrupt death as `docker kill` / SIGKILL of the jail

    thread = threading.Thread(target=killer)
    thread.start()
    return thread


def test_killed_worker_mid_batch_is_retried(backend, make_pool):
    pool = make_pool(backend, num_workers=2, max_retries=2)
    pool.run(echo_jobs(1)[0])  # compile once so the batch is all runs
    killer = kill_a_worker_after(pool, 1.0)
    results = pool.run_batch(echo_jobs(16))
    killer.join()
    assert [r.verdict for r in results] == [Verdict.OK] * 16
    assert [r.tests[0].stdout for r in results] == [str(i * i) for i in range(16)]
    assert pool.stats.retries >= 1 and pool.stats.worker_restarts >= 1
    assert pool.stats.sandbox_errors == 0
    assert max(r.attempts for r in results) >= 2
    assert pool.run_batch(echo_jobs(4))[3].verdict is Verdict.OK  # the restarted worker serves again


def test_sandbox_error_only_when_retries_are_exhausted(backend, make_pool):
    pool = make_pool(backend, num_workers=2, max_retries=0)
    pool.run(echo_jobs(1)[0])
    killer = kill_a_worker_after(pool, 1.0)
    results = pool.run_batch(echo_jobs(16))
    killer.join()
    errors = [r for r in results if r.verdict is Verdict.SANDBOX_ERROR]
    assert 1 <= len(errors) <= 2, [r.verdict for r in results]
    assert all(r.verdict is Verdict.OK for r in results if r not in errors)
    assert all(e.error and e.attempts == 1 and e.tests == [] for e in errors)
    assert pool.stats.sandbox_errors == len(errors)


def test_hung_runner_is_detected_by_reply_deadline(backend, make_pool):
    # A worker whose reply never comes (here: a jail killed between request and reply) must not hang
    # the batch: the reply deadline or EOF turns into a retry.
    pool = make_pool(backend, num_workers=1, max_retries=1, reply_margin_s=2.0)
    pool.run(echo_jobs(1)[0])
    killer = kill_a_worker_after(pool, 0.1)
    start = time.monotonic()
    result = pool.run(echo_jobs(1)[0])
    killer.join()
    assert result.verdict is Verdict.OK
    assert time.monotonic() - start < 30


@pytest.mark.slow
def test_hundreds_of_jobs_under_load(backend, make_pool):
    pool = make_pool(backend, num_workers=2)
    sources = [f"#include <cstdio>\nint main(){{long a;scanf(\"%ld\",&a);printf(\"%ld\",a*{k});}}" for k in (3, 5, 7)]
    jobs = [Job({"main.cpp": sources[i % 3]}, tests=(TestCase(f"{i}".encode(), str(i * (3, 5, 7)[i % 3])),))
            for i in range(300)]
    start = time.monotonic()
    results = pool.run_batch(jobs)
    elapsed = time.monotonic() - start
    assert all(r.verdict is Verdict.OK for r in results), {r.verdict for r in results}
    assert pool.stats.compiles == 3 and pool.stats.executed == 300
    assert pool.stats.sandbox_errors == 0 and pool.stats.worker_restarts == 0
    assert elapsed < 120


def test_jails_die_with_a_killed_host_process(backend):
    """SIGKILL the process that owns a pool: its jails must not outlive it (stdin EOF / die-with-parent)."""
    import os
    import signal
    import subprocess
    import sys

    from tests.conftest import REPO, _jail_processes

    code = ("import sys, time\nfrom sandbox.config import SandboxConfig\nfrom sandbox.pool import SandboxPool\n"
            f"p = SandboxPool(SandboxConfig(backend='{backend}', num_workers=2)).start()\n"
            "print(p.pool_id, flush=True)\ntime.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=REPO)
    pool_id = proc.stdout.readline().strip()
    assert pool_id
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        left = _jail_processes()
        if backend == "docker":
            from sandbox.docker_backend import leaked_containers

            left += leaked_containers(pool_id)
        if not left:
            break
        time.sleep(0.5)
    assert not left, left


def test_a_container_orphaned_before_it_started_is_removed_by_the_next_pool(make_pool):
    """A process SIGKILLed between creating and starting a container (e.g. a Ray actor killed while it
    starts its pool) leaves a "created" container that auto_remove never deletes: the next pool reaps it."""
    import subprocess
    import sys

    from tests.conftest import REPO, backend_skip_reason

    if reason := backend_skip_reason("docker"):
        pytest.skip(reason)
    from sandbox.docker_backend import leaked_containers

    code = ("import os, signal\nfrom sandbox.config import SandboxConfig\n"
            "from sandbox.docker_backend import DockerWorker, prepare\n"
            "DockerWorker(SandboxConfig(), prepare(SandboxConfig()), 250000, 'orphan00', 0).create()\n"
            "os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO)
    assert proc.returncode == -9
    assert leaked_containers("orphan00") == ["crucible-sbx-orphan00-0"]  # created, never started
    make_pool("docker", num_workers=1)
    assert leaked_containers("orphan00") == []


def test_an_empty_batch_returns_at_once(make_pool):
    """It used to wait forever (nothing completes, so nothing signals the end); the repair builder sends one
    when no task's reference passes."""
    pool = make_pool("bwrap", num_workers=1)
    assert pool.run_batch([]) == []
