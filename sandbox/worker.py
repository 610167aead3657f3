"""The interface both isolation backends implement: a long-lived jail running `runner.py serve`.

A worker is a line-oriented JSON request/reply channel to one runner. Anything that goes wrong with the
channel (jail died, reply late or malformed) raises WorkerError: the pool restarts the worker and retries
the job elsewhere. Program misbehaviour never raises; it comes back as a reply.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Protocol

RUNNER_PATH = Path(__file__).with_name("runner.py")


class WorkerError(RuntimeError):
    """The sandbox infrastructure failed (not the program)."""


class Worker(Protocol):
    name: str

    def start(self) -> None: ...
    def request(self, payload: dict, timeout_s: float) -> dict: ...
    def kill(self) -> None:
        """SIGKILL the jail; safe from any thread (fault-injection tests use it mid-batch)."""
    def close(self) -> None:
        """Kill and release everything; only from the thread that owns the worker."""


class LineReader:
    """Accumulates bytes from a stream and hands out complete lines before a deadline."""

    def __init__(self, read_some) -> None:
        self._read_some = read_some  # (timeout_s) -> bytes; b"" means EOF
        self._buf = bytearray()

    def readline(self, deadline: float) -> bytes:
        while True:
            cut = self._buf.find(b"\n")
            if cut >= 0:
                line = bytes(self._buf[:cut])
                del self._buf[: cut + 1]
                return line
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WorkerError("runner did not reply in time")
            chunk = self._read_some(remaining)
            if not chunk:
                raise WorkerError("runner closed its output (jail died)")
            self._buf += chunk


def decode_reply(line: bytes, name: str) -> dict:
    try:
        reply = json.loads(line)
    except ValueError:
        raise WorkerError(f"{name}: malformed reply {line[:200]!r}") from None
    if not isinstance(reply, dict):
        raise WorkerError(f"{name}: reply is not an object")
    if reply.get("runner_error"):
        raise WorkerError(f"{name}: runner failed: {reply['runner_error']}")
    return reply


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of `pid` (field 22 of /proc/pid/stat): tells a live owner from a reused pid."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def handshake(job_uid: int | None, wipe_timeout_s: float) -> dict:
    """The first request to every runner: the uid its jobs run as (None: the runner's own, on a non-root
    bubblewrap host) and the seccomp filter they run under (sandbox/seccomp.py)."""
    import base64

    from sandbox.seccomp import program_filter_bpf

    return {"op": "ping", "job_uid": job_uid, "wipe_timeout_s": wipe_timeout_s,
            "seccomp_b64": base64.b64encode(program_filter_bpf()).decode()}


def check_handshake(reply: dict, name: str, job_uid: int | None) -> None:
    if not reply.get("ok") or reply.get("job_uid") != job_uid or not reply.get("seccomp"):
        raise WorkerError(f"{name}: bad handshake {reply}")


def encode_request(payload: dict) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode() + b"\n"
