"""The sandbox against an attacker who has read its source (issue 13): one property per test, both backends.

The programs live in tests/hostile/ (they also run in the hostile corpus of test_hostile.py, where only their
verdicts are checked); here each one's own property is checked: what it printed, what the pool counted, what
the next honest jobs on the same worker get.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import threading
import time
from pathlib import Path

import pytest

from sandbox import bwrap_backend
from sandbox.types import Job, StageLimits, TestCase, Verdict
from tests.conftest import HOSTILE_DIR, backend_skip_reason

RUN = StageLimits(cpu_s=1, wall_s=6, memory_mb=256)


def hostile(name: str, stdin: bytes = b"", run_limits: StageLimits = RUN) -> Job:
    return Job({"main.cpp": (HOSTILE_DIR / name).read_text()}, tests=(TestCase(stdin=stdin),),
               run_limits=run_limits)


def honest(i: int) -> Job:
    """A distinct source per i, so each one compiles (and runs) on the worker under test."""
    src = f"#include <cstdio>\nint main(){{long a,b;scanf(\"%ld%ld\",&a,&b);printf(\"%ld\",a*b+{i});}}"
    return Job({"main.cpp": src}, tests=(TestCase(f"{i} 7".encode(), str(7 * i + i)),))


def results_of(result) -> dict[str, str]:
    """`name result` lines printed by the probe programs."""
    return dict(line.split(" ", 1) for line in result.tests[0].stdout.splitlines() if " " in line)


def test_program_cannot_touch_its_supervisor(backend, make_pool):
    if backend == "bwrap" and not bwrap_backend.privileged():
        pytest.skip("a non-root bubblewrap host runs job and runner as one uid (documented residual risk)")
    pool = make_pool(backend, num_workers=1)
    probe = pool.run(hostile("touch_the_supervisor.cpp"))
    seen = probe.tests[0].stdout.splitlines()
    assert probe.verdict is Verdict.OK and len(seen) == 12, probe.to_json()
    assert all(line.endswith("Operation not permitted") for line in seen), seen
    after = pool.run_batch([honest(i) for i in range(20)])
    assert [r.verdict for r in after] == [Verdict.OK] * 20, [r.to_json() for r in after if r.verdict != "OK"]
    assert pool.stats.worker_restarts == 0 and pool.stats.compiles == 21


@pytest.mark.parametrize("program", ["mode_000_directories.cpp", "deep_directory_tree.cpp", "symlink_maze.cpp",
                                     "many_empty_files.cpp"])
def test_any_tree_a_program_builds_gets_a_program_verdict(backend, make_pool, program):
    pool = make_pool(backend, num_workers=1)
    result = pool.run(hostile(program))
    assert result.verdict in (Verdict.OK, Verdict.RUNTIME_ERROR, Verdict.TIME_LIMIT), result.to_json()
    assert result.attempts == 1
    stats = pool.stats
    assert stats.sandbox_errors == stats.retries == stats.worker_restarts == 0, stats
    assert pool.run(honest(1)).verdict is Verdict.OK


def test_cleanup_that_cannot_finish_keeps_the_verdict_and_replaces_the_worker(backend, make_pool):
    pool = make_pool(backend, num_workers=1, wipe_timeout_s=0.05)
    result = pool.run(hostile("many_empty_files.cpp"))
    assert result.verdict in (Verdict.OK, Verdict.RUNTIME_ERROR, Verdict.TIME_LIMIT), result.to_json()
    assert result.attempts == 1 and pool.stats.sandbox_errors == 0
    assert pool.stats.unclean_restarts == 1, pool.stats
    assert pool.run(honest(2)).verdict is Verdict.OK


def test_cpu_limit_covers_every_process_of_the_stage(backend, make_pool):
    pool = make_pool(backend, num_workers=1)
    result = pool.run(hostile("fork_cpu_burner.cpp", run_limits=StageLimits(cpu_s=1, wall_s=15)))
    test = result.tests[0]
    assert test.exit_code == 0, result.to_json()  # it exited cleanly ...
    assert result.verdict is Verdict.TIME_LIMIT and "CPU" in test.detail, result.to_json()  # ... over budget
    assert test.cpu_s >= 2.0  # five processes x 0.45 s, orphans included


THREADED = {
    "std_thread": ("#include <thread>\n#include <cstdio>\nint main(){int x=0;std::thread t([&]{x=41;});t.join();"
                   "printf(\"%d\",x+1);}", ("-std=c++17", "-O2", "-pthread"), "42"),
    "std_async": ("#include <future>\n#include <cstdio>\nint main(){auto a=std::async(std::launch::async,[]{"
                  "return 20;});auto b=std::async(std::launch::async,[]{return 22;});printf(\"%d\",a.get()+"
                  "b.get());}", ("-std=c++17", "-O2", "-pthread"), "42"),
    "openmp": ("#include <cstdio>\nint main(){long s=0;\n#pragma omp parallel for reduction(+:s) num_threads(4)\n"
               "for(int i=0;i<1000;i++)s+=i;\nprintf(\"%ld\",s);}", ("-std=c++17", "-O2", "-fopenmp"), "499500"),
}


@pytest.mark.parametrize("kind", sorted(THREADED))
def test_honest_threaded_programs_pass(backend, make_pool, kind):
    src, flags, expected = THREADED[kind]
    pool = make_pool(backend, num_workers=1)
    result = pool.run(Job({"main.cpp": src}, flags=flags, tests=(TestCase(expected_stdout=expected),)))
    assert result.verdict is Verdict.OK, result.to_json()


def test_kernel_attack_surface_is_closed(backend, make_pool):
    pool = make_pool(backend, num_workers=1)
    result = pool.run(hostile("kernel_attack_surface.cpp"))
    seen = results_of(result)
    assert len(seen) == 18, result.to_json()
    # Refused, not failed for another reason (a bad argument would hide a call that works).
    refused = ("Operation not permitted", "Address family not supported by protocol", "Function not implemented")
    opened = {call: outcome for call, outcome in seen.items() if outcome not in refused}
    assert not opened, f"not refused in a jailed program: {opened}"


@contextlib.contextmanager
def host_memory_drop():
    """Yields a list that ends up holding the largest drop of the host's MemAvailable (MB) while inside."""
    before = _mem_available_mb()
    low = [before]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.05):
            low.append(_mem_available_mb())

    sampler = threading.Thread(target=sample)
    sampler.start()
    drop: list[float] = []
    try:
        yield drop
    finally:
        stop.set()
        sampler.join()
        drop.append(before - min(low))


def test_memory_outside_rlimit_as_is_refused(backend, make_pool):
    pool = make_pool(backend, num_workers=1)
    with host_memory_drop() as drop:
        result = pool.run(hostile("shared_memory_hoard.cpp", run_limits=StageLimits(cpu_s=5, wall_s=10)))
    assert result.verdict in (Verdict.OK, Verdict.RUNTIME_ERROR, Verdict.MEMORY_LIMIT), result.to_json()
    assert drop[0] < pool.config.worker_memory_mb, drop
    assert pool.run(honest(3)).verdict is Verdict.OK


def _mem_available_mb() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def _channel_job(stdin: str) -> Job:
    return Job({"main.cpp": (HOSTILE_DIR / "pairs" / "cross_job_channel.cpp").read_text()},
               tests=(TestCase(stdin=stdin.encode()),), run_limits=StageLimits(cpu_s=2, wall_s=8))


def test_nothing_passes_from_one_job_to_the_next(backend, make_pool):
    token = secrets.token_hex(8)
    pool = make_pool(backend, num_workers=1)
    writer, reader = pool.run_batch([_channel_job(f"write {token}"), _channel_job("read")])
    assert writer.verdict is Verdict.OK and reader.verdict is Verdict.OK, (writer.to_json(), reader.to_json())
    assert reader.tests[0].stdout.strip() == "done", reader.tests[0].stdout


def test_nothing_passes_between_concurrent_jobs(backend, make_pool):
    token = secrets.token_hex(8)
    pool = make_pool(backend, num_workers=2, dedupe=False)  # both compile and run at once
    writer, reader = pool.run_batch([_channel_job(f"write {token}"), _channel_job("read")])
    assert writer.verdict is Verdict.OK and reader.verdict is Verdict.OK, (writer.to_json(), reader.to_json())
    assert reader.tests[0].stdout.strip() == "done", reader.tests[0].stdout


def test_link_order_is_the_cache_keys_order(backend, make_pool):
    """Static initialisers run in link order: two jobs with the same files in a different order share a
    cache key, so both must link in the key's (sorted) order and print the same."""
    unit = "#include <cstdio>\nstruct P{{P(){{std::printf(\"{0}\");}}}} p_{0};\n"
    files = {"b.cpp": unit.format("b"), "a.cpp": unit.format("a") + "int main(){}\n"}
    pool = make_pool(backend, num_workers=1)
    first = pool.run(Job(dict(files)))
    second = pool.run(Job(dict(reversed(files.items()))))
    assert second.compile_cached
    assert first.tests[0].stdout == second.tests[0].stdout == "ab"


def test_compile_that_ran_out_of_time_is_not_cached(backend, make_pool):
    pool = make_pool(backend, num_workers=1)
    slow = ("constexpr long f(){long s=0;for(long i=0;i<100000000;i++)s+=i%7;return s;}\n"
            "static_assert(f()>0);\nint main(){}\n")  # minutes of constant evaluation
    job = Job({"main.cpp": slow}, flags=("-std=c++17", "-fconstexpr-loop-limit=1000000000",
                                          "-fconstexpr-ops-limit=100000000000"),
              compile_limits=StageLimits(cpu_s=1, wall_s=1, memory_mb=1024, max_open_files=256))
    first = pool.run(job)
    second = pool.run(job)
    assert first.verdict is second.verdict is Verdict.COMPILE_ERROR, first.to_json()
    assert first.compile.detail == "compile time limit" or first.compile.cpu_s >= 0.5, first.to_json()
    assert not second.compile_cached and pool.stats.compiles == 2


def test_docker_keeps_no_copy_of_program_output(make_pool):
    reason = backend_skip_reason("docker")
    if reason:
        pytest.skip(reason)
    from sandbox.docker_backend import client

    pool = make_pool("docker", num_workers=1)
    src = "#include <cstdio>\nint main(){int n;scanf(\"%d\",&n);for(int i=0;i<100;i++)printf(\"%08d\",n);}"
    results = pool.run_batch([Job({"main.cpp": src}, tests=(TestCase(f"{i}".encode()),)) for i in range(100)])
    assert all(r.verdict is Verdict.OK for r in results)
    container = client().containers.get(pool.workers[0].container_id)
    assert container.attrs["HostConfig"]["LogConfig"]["Type"] == "none"
    log_path = container.attrs.get("LogPath") or ""
    assert not log_path or not os.path.exists(log_path) or os.path.getsize(log_path) == 0, log_path


def test_bwrap_pool_outlives_the_thread_that_started_it():
    """--die-with-parent follows the thread that spawned bwrap; CppReward starts pools in any thread."""
    reason = backend_skip_reason("bwrap")
    if reason:
        pytest.skip(reason)
    from sandbox.config import SandboxConfig
    from sandbox.pool import SandboxPool

    made: dict = {}
    starter = threading.Thread(target=lambda: made.update(pool=SandboxPool(
        SandboxConfig(backend="bwrap", num_workers=1)).start()))
    starter.start()
    starter.join()
    time.sleep(0.5)
    pool = made["pool"]
    try:
        assert pool.run(honest(4)).verdict is Verdict.OK
        assert pool.stats.worker_restarts == 0, pool.stats
    finally:
        pool.close()


def test_gc_removes_orphans_and_spares_live_pools(make_pool):
    reason = backend_skip_reason("docker")
    if reason:
        pytest.skip(reason)
    import socket
    import subprocess
    import sys

    from sandbox.docker_backend import LABEL, OWNER_LABEL, POOL_LABEL, client, leaked_containers
    from tests.conftest import REPO

    pool = make_pool("docker", num_workers=1)
    dead_owner = f"{socket.gethostname()}:999999999:0"  # no such pid
    client().containers.create(pool.config.image, ["true"], name="crucible-sbx-gcorphan-0",
                               labels={LABEL: "1", POOL_LABEL: "gcorphan", OWNER_LABEL: dead_owner})
    out = subprocess.run([sys.executable, "-m", "sandbox", "gc"], capture_output=True, text=True, cwd=REPO,
                         timeout=120)
    assert out.returncode == 0 and json.loads(out.stdout.splitlines()[-1])["scope"] == "orphans"
    assert leaked_containers("gcorphan") == []
    assert leaked_containers(pool.pool_id) == [pool.workers[0].name]  # the live pool keeps its worker
    assert pool.run(honest(5)).verdict is Verdict.OK


def test_bwrap_jail_kernel_memory_is_capped_by_its_cgroup(make_pool):
    """An inode flood costs kernel memory RLIMIT_AS never sees; under bwrap only the jail's cgroup stops it."""
    reason = backend_skip_reason("bwrap")
    if reason:
        pytest.skip(reason)
    from sandbox import cgroup

    where = cgroup.available()
    if where is None:
        pytest.skip("no writable memory+pids cgroup on this host (doctor reports the exposure)")
    pool = make_pool("bwrap", num_workers=1, worker_memory_mb=256)
    group = pool.workers[0].jail_cgroup
    assert group is not None
    with host_memory_drop() as drop:  # without the cgroup: ~500 MB on the dev machine, and an unclean jail
        result = pool.run(hostile("many_empty_files.cpp", run_limits=StageLimits(cpu_s=8, wall_s=15)))
    assert result.verdict in (Verdict.OK, Verdict.RUNTIME_ERROR, Verdict.TIME_LIMIT, Verdict.MEMORY_LIMIT), \
        result.to_json()
    assert result.attempts == 1 and pool.stats.sandbox_errors == 0 and pool.stats.worker_restarts == 0
    peak = group.peak_memory_bytes()
    assert peak is not None and peak <= (256 + cgroup.HEADROOM_MB) << 20
    assert drop[0] < 256 + cgroup.HEADROOM_MB, drop  # the jail cgroup allows the memory limit + headroom
    assert pool.run(honest(6)).verdict is Verdict.OK


def test_non_root_bwrap_workers_do_not_share_a_process_count():
    """The SLURM case: every jail of a non-root user maps that one uid. Each jail is its own user namespace,
    and Linux (5.14 and newer) counts RLIMIT_NPROC per user namespace, so one worker's processes never use
    up another's. Runs the pool as `nobody` under the system python3 with the venv's packages."""
    import shutil
    import subprocess
    import sys

    from tests.conftest import REPO

    system_py = "/usr/bin/python3"
    if os.geteuid() != 0 or not shutil.which("setpriv") or backend_skip_reason("bwrap"):
        pytest.skip("needs root (to become nobody), setpriv and bubblewrap")
    version = subprocess.run([system_py, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True,
                             text=True).stdout.strip()
    if version != str(tuple(sys.version_info[:2])):
        pytest.skip(f"{system_py} is {version}, the venv's packages are for {sys.version_info[:2]}")
    import tempfile

    home = Path(tempfile.mkdtemp(prefix="crucible-nonroot-"))  # pytest's tmp_path is private to root
    os.chmod(home, 0o755)
    os.chown(home, 65534, 65534)
    site = next(p for p in sys.path if p.endswith("site-packages") and ".venv" in p)
    try:
        out = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "env", f"HOME={home}",
             f"PYTHONPATH={REPO}:{site}", system_py,
             str(REPO / "tests/integration/sandbox/scripts/nonroot_nproc.py"), str(home / "cache")],
            capture_output=True, text=True, timeout=300, cwd="/")
    finally:
        shutil.rmtree(home, ignore_errors=True)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report == {"hold": ["OK", "15"], "fork": ["OK", "12"], "restarts": 0}, report


def test_image_build_refuses_an_archive_it_cannot_verify(tmp_path):
    """scripts/build_sandbox_image.sh checks Debian's Release signature and aborts on a key it does not
    trust (here: the keyring of removed keys, which cannot verify today's archive). Needs the Debian mirror."""
    import shutil
    import subprocess

    from tests.conftest import REPO

    wrong = "/usr/share/keyrings/debian-archive-removed-keys.gpg"
    if os.geteuid() != 0 or not shutil.which("debootstrap") or not os.path.exists(wrong):
        pytest.skip("needs root, debootstrap and debian-archive-keyring")
    env = {**os.environ, "DEBIAN_KEYRING": wrong, "TMPDIR": str(tmp_path)}
    out = subprocess.run(["bash", "scripts/build_sandbox_image.sh", "crucible-sandbox:never-built"], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=300)
    text = out.stdout + out.stderr
    if "Failed getting release file" in text or "Couldn't download" in text:
        pytest.skip(f"Debian mirror unreachable: {text[-300:]}")
    assert out.returncode != 0 and "Release signed by unknown key" in text, text[-2000:]
    assert subprocess.run(["docker", "image", "inspect", "crucible-sandbox:never-built"],
                          capture_output=True).returncode != 0


def test_bwrap_cgroups_of_a_killed_pool_are_reaped():
    """A pool SIGKILLed (a Ray actor, say) cannot remove its jails' cgroups: the next pool does."""
    from sandbox import cgroup
    from sandbox.bwrap_backend import prepare
    from sandbox.config import SandboxConfig

    if backend_skip_reason("bwrap") or cgroup.available() is None:
        pytest.skip("needs bubblewrap and a writable memory+pids cgroup")
    dead = cgroup.JailCgroup("crucible-bwrap-deadpool-0-1-o999999999-1", 64, 16)  # no such owner
    alive = cgroup.JailCgroup(cgroup.jail_name("crucible-bwrap-livepool-0", 1), 64, 16)  # this process
    try:
        prepare(SandboxConfig(backend="bwrap"))
        assert not any(d.exists() for d in dead.dirs.values())
        assert all(d.exists() for d in alive.dirs.values())
    finally:
        assert alive.remove() and dead.remove()
