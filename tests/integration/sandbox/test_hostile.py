"""The adversarial corpus (tests/hostile/*.cpp) on both backends.

Each program must be contained within bounded time with one of the verdicts its header allows
(`// expect:`), must not print what its `// forbid:` line names, must leave the host untouched, and the
pool must go on serving honest jobs without a single worker restart."""

from __future__ import annotations

import os
import re
import secrets
import socket
import time
from pathlib import Path

import pytest

from sandbox.types import Job, StageLimits, TestCase, Verdict
from tests.conftest import HOSTILE_DIR, backend_skip_reason

PROGRAMS = sorted(HOSTILE_DIR.glob("*.cpp"))
RUN_LIMITS = StageLimits(cpu_s=1, wall_s=2, memory_mb=256, max_processes=16, max_output_bytes=1 << 16)
COMPILE_LIMITS = StageLimits(cpu_s=10, wall_s=15, memory_mb=1024, max_file_mb=64, max_open_files=256)
CANARY_FILE = Path("/tmp/crucible_host_canary.txt")
HOST_WRITE_TARGETS = ["/etc/crucible_pwned", "/usr/crucible_pwned", "/var/tmp/crucible_pwned",
                      "/root/crucible_pwned"]


def header(path: Path, key: str) -> list[str]:
    match = re.search(rf"^// {key}: (.*)$", path.read_text(errors="replace"), re.M)
    return match.group(1).split() if match else []


def test_corpus_is_large_and_annotated():
    assert len(PROGRAMS) >= 30
    for path in PROGRAMS:
        allowed = header(path, "expect")
        assert allowed, f"{path.name} lacks an // expect: line"
        assert all(v in Verdict.__members__ and v != "SANDBOX_ERROR" for v in allowed), path.name


@pytest.fixture(scope="module", params=["docker", "bwrap"])
def corpus_run(request):
    """Run the whole corpus once per backend, then honest jobs on the same pool."""
    reason = backend_skip_reason(request.param)
    if reason:
        pytest.skip(reason)
    from sandbox.config import SandboxConfig
    from sandbox.pool import SandboxPool

    secret = f"CANARY-{secrets.token_hex(8)}"
    CANARY_FILE.write_text(secret + "\n")
    os.environ["CRUCIBLE_CANARY"] = secret
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    jobs = [Job({"main.cpp": p.read_text(errors="replace")}, tests=(TestCase(stdin=f"{port}\n".encode()),),
                run_limits=RUN_LIMITS, compile_limits=COMPILE_LIMITS) for p in PROGRAMS]
    honest = [Job({"main.cpp": "#include <cstdio>\nint main(){int a,b;scanf(\"%d%d\",&a,&b);printf(\"%d\",a*b);}"},
                  tests=(TestCase(f"{i} 7".encode(), str(7 * i)),)) for i in range(8)]
    pool = SandboxPool(SandboxConfig(backend=request.param, num_workers=2)).start()
    try:
        start = time.monotonic()
        results = pool.run_batch(jobs)
        elapsed = time.monotonic() - start
        after = pool.run_batch(honest)
        stats = pool.stats
    finally:
        pool.close()
        del os.environ["CRUCIBLE_CANARY"]
    try:
        conn, _ = listener.accept()
        conn.close()
        loopback_reached = True
    except BlockingIOError:
        loopback_reached = False
    listener.close()
    canary_intact = CANARY_FILE.read_text() == secret + "\n"
    CANARY_FILE.unlink()
    return {"results": dict(zip((p.name for p in PROGRAMS), results)), "after": after, "stats": stats,
            "elapsed": elapsed, "secret": secret, "loopback_reached": loopback_reached,
            "canary_intact": canary_intact}


@pytest.mark.slow
@pytest.mark.parametrize("program", [p.name for p in PROGRAMS])
def test_hostile_program_is_contained(corpus_run, program):
    result = corpus_run["results"][program]
    path = HOSTILE_DIR / program
    allowed = header(path, "expect")
    assert result.verdict.value in allowed, f"{program}: {result.verdict} not in {allowed}: {result.to_json()}"
    text = repr(result.to_json())
    for word in header(path, "forbid"):
        needle = corpus_run["secret"] if word == "CANARY" else word
        assert needle not in text, f"{program} printed {needle!r}: {text[:2000]}"
    budget = COMPILE_LIMITS.wall_s + RUN_LIMITS.wall_s + 2
    spent = (result.compile.wall_s if result.compile else 0) + sum(t.wall_s for t in result.tests)
    assert spent <= budget


@pytest.mark.slow
def test_corpus_leaves_host_untouched_and_pool_serving(corpus_run):
    assert corpus_run["canary_intact"]
    assert not corpus_run["loopback_reached"], "a jailed program reached a host loopback listener"
    for target in HOST_WRITE_TARGETS:
        assert not Path(target).exists(), target
    assert [r.verdict for r in corpus_run["after"]] == [Verdict.OK] * 8
    stats = corpus_run["stats"]
    assert stats.sandbox_errors == 0 and stats.worker_restarts == 0, stats
    # Every program was contained well within its limits: on 2 workers the corpus takes bounded time.
    assert corpus_run["elapsed"] < 240


def test_invalid_utf8_output_is_escaped(corpus_run):
    result = corpus_run["results"]["invalid_utf8_output.cpp"]
    assert result.tests[0].stdout.startswith("\\xff\\xfe\\x80")
    assert "\\xff" in result.tests[0].stderr


def test_fd_exhaustion_hits_the_open_files_limit(corpus_run):
    out = corpus_run["results"]["fd_exhaustion.cpp"].tests[0].stdout
    assert int(out.split()[1]) <= RUN_LIMITS.max_open_files
