"""A Ray head of our own on this machine: loopback by default, its own temp dir, token auth on.

`stop()` kills only this head's processes, never `ray stop` (which kills every Ray on the machine, including
a cluster someone else started). Used by `make demo` (the pipeline submits its RLVR jobs to one), by tests, and
by `python -m learner.head` (the same head, kept running between commands for `ray job submit`).
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


def head_env(token: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """What the head, `ray job submit` and the job's driver need in their environment: this venv's `ray` and
    `python` first on PATH (jobs run `python` from the head's PATH), and Ray 2.60's token auth with one shared
    per-cluster token."""
    env = dict(os.environ if base is None else base)
    env.pop("RAY_ADDRESS", None)
    env.update({"PATH": f"{VENV_BIN}:{env.get('PATH', '/usr/bin:/bin')}", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
                "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token,
                "RAY_metrics_report_interval_ms": "2000"})  # gauges reach the endpoint within seconds
    return env


class LocalRayHead:
    """`LocalRayHead()` starts a head on free loopback ports; `LocalRayHead.attach(state)` names a running one."""

    def __init__(self, num_cpus: int | None = None, metrics_port: int | None = None,
                 dashboard_port: int | None = None, port: int | None = None, node_ip: str = "127.0.0.1",
                 resources: str | None = None, token: str | None = None) -> None:
        self.temp_dir = tempfile.mkdtemp(prefix="crucible-ray-")  # short: Ray's socket paths must fit 107 bytes
        self.node_ip = node_ip
        self.port = port or free_port()
        self.dashboard_port = dashboard_port or free_port()
        self.metrics_port = metrics_port or free_port()
        self.token = token or secrets.token_hex(16)
        self.env = head_env(self.token)
        cmd = [str(VENV_BIN / "ray"), "start", "--head", f"--node-ip-address={node_ip}", f"--port={self.port}",
               f"--num-cpus={num_cpus or os.cpu_count()}", "--include-dashboard=true", f"--dashboard-host={node_ip}",
               f"--dashboard-port={self.dashboard_port}", f"--metrics-export-port={self.metrics_port}",
               f"--temp-dir={self.temp_dir}", "--disable-usage-stats", *([f"--resources={resources}"] if resources else [])]
        proc = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=180)
        if proc.returncode != 0:
            self.stop()
            raise RuntimeError(f"`ray start --head` failed (exit {proc.returncode}): {proc.stderr[-2000:]}")

    @classmethod
    def attach(cls, state: dict) -> "LocalRayHead":
        """The head described by `state()` (started by another process): for `stop()`, `processes()`, `env`."""
        head = cls.__new__(cls)
        head.temp_dir, head.node_ip, head.token = state["temp_dir"], state["node_ip"], state["token"]
        head.port, head.dashboard_port, head.metrics_port = state["port"], state["dashboard_port"], state["metrics_port"]
        head.env = head_env(head.token)
        return head

    def state(self) -> dict:
        return {"temp_dir": self.temp_dir, "node_ip": self.node_ip, "port": self.port,
                "dashboard_port": self.dashboard_port, "metrics_port": self.metrics_port, "token": self.token,
                "address": self.address, "dashboard": self.dashboard, "metrics_url": self.metrics_url}

    @property
    def address(self) -> str:
        """The GCS address: `ray start --address=...` for more nodes, `run.ray_address` for a direct run."""
        return f"{self.node_ip}:{self.port}"

    @property
    def dashboard(self) -> str:
        """The job submission address (`ray job submit --address`, RAY_ADDRESS for the job CLI)."""
        return f"http://{self.node_ip}:{self.dashboard_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.node_ip}:{self.metrics_port}/metrics"

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
