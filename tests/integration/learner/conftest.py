"""Fixtures for the RLVR loop: the embedded tiny policy (built once per machine, cached) and local Ray."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # else Ray rewrites 127.0.0.1 to the external IP


@pytest.fixture(scope="session")
def tiny_policy() -> str:
    from learner.tiny_policy import build_tiny_policy

    return str(build_tiny_policy())


import secrets  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import psutil  # noqa: E402

from learner.cluster import free_port  # noqa: E402

REPO = Path(__file__).resolve().parents[3]
VENV_BIN = Path(sys.executable).parent


class RayHead:
    """A real `ray start --head` on loopback with its own temp dir and ports; stop() kills only its processes
    (never `ray stop`, which would kill every Ray on the machine)."""

    def __init__(self, num_cpus: int = 2) -> None:
        self.temp_dir = tempfile.mkdtemp(prefix="crucible-ray-")
        self.port, self.dashboard_port, self.metrics_port = free_port(), free_port(), free_port()
        # Ray 2.60 token auth stays on: a per-cluster token that the head, the job client and drivers share.
        self.env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
                    "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16),
                    "RAY_metrics_report_interval_ms": "2000"}  # gauges reach the endpoint within seconds
        self.env.pop("RAY_ADDRESS", None)
        subprocess.run(
            [str(VENV_BIN / "ray"), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={self.port}",
             f"--num-cpus={num_cpus}", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
             f"--dashboard-port={self.dashboard_port}", f"--metrics-export-port={self.metrics_port}",
             f"--temp-dir={self.temp_dir}", "--disable-usage-stats"],
            env=self.env, check=True, capture_output=True, timeout=180)
        self.address = f"127.0.0.1:{self.port}"
        self.dashboard = f"http://127.0.0.1:{self.dashboard_port}"

    def processes(self) -> list[psutil.Process]:
        roots = [p for p in psutil.process_iter(["cmdline"]) if self.temp_dir in " ".join(p.info["cmdline"] or [])]
        procs = {p.pid: p for p in roots}
        for p in roots:
            try:
                procs.update({c.pid: c for c in p.children(recursive=True)})
            except psutil.NoSuchProcess:
                pass
        return list(procs.values())

    def stop(self) -> None:
        procs = self.processes()
        for p in procs:
            try:
                p.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(procs, timeout=30)


@pytest.fixture(scope="module")
def ray_head():
    head = RayHead()
    try:
        yield head
    finally:
        head.stop()


def learner_cmd(*overrides: str) -> list[str]:
    return [str(VENV_BIN / "python"), "-m", "learner", "--config", "configs/rlvr/tiny-cpu.yaml", *overrides]


def wait_for(predicate, timeout: float, what: str, poll: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
