"""A Ray head of our own on this machine: loopback only, its own temp dir and ports, token auth on.

`stop()` kills only this head's processes, never `ray stop` (which kills every Ray on the machine, including
a cluster someone else started). Used by `make demo` (the pipeline submits its RLVR jobs to one) and by tests.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from learner.cluster import free_port

VENV_BIN = Path(sys.executable).parent


class LocalRayHead:
    def __init__(self, num_cpus: int | None = None, metrics_port: int | None = None,
                 dashboard_port: int | None = None) -> None:
        self.temp_dir = tempfile.mkdtemp(prefix="crucible-ray-")
        self.port = free_port()
        self.dashboard_port = dashboard_port or free_port()
        self.metrics_port = metrics_port or free_port()
        # Ray 2.60 token auth stays on: a per-cluster token that the head, the job client and drivers share.
        self.env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
                    "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16),
                    "RAY_metrics_report_interval_ms": "2000"}  # gauges reach the endpoint within seconds
        self.env.pop("RAY_ADDRESS", None)
        cmd = [str(VENV_BIN / "ray"), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={self.port}",
               f"--num-cpus={num_cpus or os.cpu_count()}", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
               f"--dashboard-port={self.dashboard_port}", f"--metrics-export-port={self.metrics_port}",
               f"--temp-dir={self.temp_dir}", "--disable-usage-stats"]
        proc = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=180)
        if proc.returncode != 0:
            self.stop()
            raise RuntimeError(f"`ray start --head` failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
        self.address = f"127.0.0.1:{self.port}"
        self.dashboard = f"http://127.0.0.1:{self.dashboard_port}"
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}/metrics"

    def wait_for_job_agent(self, timeout: float = 180.0) -> None:
        """The dashboard answers before its job agent has registered ("No available agent to submit job"):
        a no-op job that runs to completion says that `ray job submit` will be accepted."""
        deadline = time.monotonic() + timeout
        while True:
            proc = subprocess.run([str(VENV_BIN / "ray"), "job", "submit", "--address", self.dashboard, "--", "true"],
                                  env=self.env, capture_output=True, text=True, timeout=timeout)
            if proc.returncode == 0:
                return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the local Ray head's job agent did not come up in {timeout:.0f} s: "
                                   f"{proc.stderr[-1000:]}")
            time.sleep(2)

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

    def __enter__(self) -> "LocalRayHead":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
