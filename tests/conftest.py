"""Shared fixtures: real sandbox pools per backend, skipped with a reason when a backend is absent,
and a session-end leak check (no sandbox containers or jail processes left behind)."""

from __future__ import annotations

import os

# Before anything imports Ray: Ray reads this once, at import, and with it unset on Linux it puts in-process
# clusters (cluster_utils, ray.init) on the machine's external address instead of 127.0.0.1. Every test that
# uses Ray relies on it; a conftest deeper in the tree is too late once a module there has imported Ray.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import shutil  # noqa: E402
import subprocess  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
HOSTILE_DIR = Path(__file__).with_name("hostile")
HUMANEVAL_X = REPO.parent / "shared" / "data" / "humaneval-x" / "humaneval_cpp.jsonl.gz"
MULTIPL_E = REPO.parent / "shared" / "data" / "multipl-e"


def _docker_ready() -> str | None:
    if shutil.which("docker") is None:
        return "docker CLI missing"
    from sandbox.image import DEFAULT_IMAGE

    if subprocess.run(["docker", "image", "inspect", DEFAULT_IMAGE], capture_output=True).returncode:
        return f"Docker daemon or image {DEFAULT_IMAGE} unavailable (run `make setup`)"
    return None


def _bwrap_ready() -> str | None:
    return None if shutil.which("bwrap") else "bubblewrap missing"


def backend_skip_reason(backend: str) -> str | None:
    reason = _docker_ready() if backend == "docker" else _bwrap_ready()
    if reason and os.environ.get("CI"):
        pytest.fail(f"{backend} backend must be available in CI: {reason}")
    return reason


@pytest.fixture(params=["docker", "bwrap"])
def backend(request) -> str:
    reason = backend_skip_reason(request.param)
    if reason:
        pytest.skip(reason)
    return request.param


@pytest.fixture
def make_pool():
    """Factory for started pools; every pool it made is closed at the end of the test."""
    from sandbox.config import SandboxConfig
    from sandbox.pool import SandboxPool

    pools = []

    def make(backend: str, **overrides) -> SandboxPool:
        overrides.setdefault("num_workers", 2)
        pool = SandboxPool(SandboxConfig(backend=backend, **overrides)).start()
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.close()


def _jail_processes() -> list[str]:
    """Host processes running as a jail uid (>= 200000): none may outlive their pool."""
    out = subprocess.run(["ps", "-e", "-o", "uid=,pid=,comm="], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if line.split() and int(line.split()[0]) >= 200_000]


@pytest.fixture(scope="session", autouse=True)
def no_leaks_after_session():
    yield
    leaks = _jail_processes()
    from sandbox import cgroup

    cgroup.reap_orphans()  # jails of pools SIGKILLed by the Ray fault tests (the next pool reaps them too)
    for parent in (cgroup.v1_parents() or {}).values():  # bwrap jails' cgroups go with their workers
        leaks += [str(d) for d in parent.glob("crucible-bwrap-*")]
    if _docker_ready() is None:
        from sandbox.docker_backend import leaked_containers, reap_orphans

        # a process SIGKILLed while it created a container (the Ray fault tests do this) leaves it "created";
        # the next pool reaps such orphans (tested on its own), and so does the end of the session
        reap_orphans()
        leaks += leaked_containers()
    assert not leaks, f"sandbox leaked processes/containers: {leaks}"


# ---- a native finalizer must not turn a finished session red --------------------------------------------
# Once pytest has printed its summary and this session's leak check has run, the results are final. One full
# run on the dev machine passed every test and then segfaulted in interpreter finalization (native
# extensions' atexit/destructor order: Ray, gloo, tokenizers, ...). We record the session's own exit status
# and leave through os._exit at the very end, so teardown of native libraries cannot change that status.
# Crashes while tests run still fail the run, with Python stacks (PYTHONFAULTHANDLER=1 in the Makefile).
_SESSION_STATUS: list[int] = []


def pytest_sessionfinish(session, exitstatus):
    _SESSION_STATUS.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    if _SESSION_STATUS and os.environ.get("CRUCIBLE_FAST_EXIT", "1") == "1":
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_SESSION_STATUS[-1])
