"""Docker backend: one long-lived container per worker, the runner as its PID 1, jobs over attached stdio.

Isolation of each container: no network (`network_mode=none`), read-only root file system, tmpfs for
/work, /tmp and /dev/shm (size- and inode-capped), no-new-privileges, Docker's default seccomp profile, a
memory cgroup without swap, a pids cgroup, a CPU quota, a private IPC namespace and no log driver (the
runner's replies carry program output and binaries; Docker must keep no copy). The runner is the
container's root with only CAP_SETUID, CAP_SETGID and CAP_KILL; every job process runs as an unprivileged
uid unique to the worker (so per-uid process limits of one worker never starve another, and a program cannot
touch its supervisor) with no capabilities and our own seccomp filter on top of Docker's. Nothing from the
host is visible except the read-only runner script. Jobs pay neither `docker run` nor `docker exec`: the
runner reads them from its stdin.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import time
from pathlib import Path

import docker
from docker.errors import DockerException, NotFound
from docker.types import LogConfig, Ulimit

from sandbox import hostfiles
from sandbox.config import SandboxConfig
from sandbox.image import RUNNER_MOUNT
from sandbox.worker import (LineReader, WorkerError, check_handshake, decode_reply, encode_request,
                            handshake, process_start_time)

LABEL = "crucible.sandbox"
POOL_LABEL = "crucible.sandbox.pool"
OWNER_LABEL = "crucible.sandbox.owner"  # host:pid:start-time of the process that created the container

log = logging.getLogger(__name__)


def owner_id(pid: int | None = None) -> str:
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{process_start_time(pid)}"


def _owner_alive(owner: str) -> bool:
    host, _, rest = owner.partition(":")
    pid, _, started = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True  # another host's container (a shared daemon): not ours to judge
    return process_start_time(int(pid)) == started


def reap_orphans() -> list[str]:
    """Remove sandbox containers whose creating process is dead. A process SIGKILLed between creating and
    starting a container leaves it in "created" state, which auto_remove never deletes; the next pool on
    the machine cleans up after it."""
    reaped = []
    for c in _labelled_containers(None):
        owner = c.labels.get(OWNER_LABEL)
        if owner and not _owner_alive(owner):
            try:
                c.remove(force=True)
                reaped.append(c.name)
            except DockerException:  # already being removed
                pass
    if reaped:
        log.warning("removed %d sandbox containers left by dead processes: %s", len(reaped), reaped)
    return reaped


def client() -> docker.DockerClient:
    try:
        c = docker.from_env(timeout=120)
        c.ping()
        return c
    except DockerException as exc:
        raise WorkerError(f"Docker daemon not reachable ({exc}); run `python -m sandbox doctor`") from None


class _Demux:
    """Reads Docker's multiplexed attach stream (8-byte frame headers) and yields stdout bytes."""

    def __init__(self, sock) -> None:
        self._sock = sock
        self._raw = bytearray()

    def read_some(self, timeout_s: float) -> bytes:
        deadline = time.monotonic() + timeout_s
        while True:
            if len(self._raw) >= 8:
                size = int.from_bytes(self._raw[4:8], "big")
                if len(self._raw) >= 8 + size:
                    stream, payload = self._raw[0], bytes(self._raw[8 : 8 + size])
                    del self._raw[: 8 + size]
                    if stream == 1:
                        return payload
                    continue
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self._sock], [], [], remaining)[0]:
                raise WorkerError("runner did not reply in time")
            chunk = self._sock.recv(1 << 20)
            if not chunk:
                return b""
            self._raw += chunk


def prepare(config: SandboxConfig) -> Path:
    """Once per pool: the daemon answers, the image exists, containers of dead owners are removed, and the
    runner is copied out of the checkout (returns the copy every container mounts read-only)."""
    reap_orphans()
    try:
        client().images.get(config.image)
    except NotFound:
        raise WorkerError(f"sandbox image {config.image} is missing: run `make setup` "
                          "(or scripts/build_sandbox_image.sh)") from None
    return hostfiles.runner_copy(hostfiles.default_cache_dir())


class DockerWorker:
    def __init__(self, config: SandboxConfig, prepared: Path, uid: int, pool_id: str, index: int) -> None:
        self.config = config
        self.runner_path = prepared
        self.uid = uid
        self.pool_id = pool_id
        self.name = f"crucible-sbx-{pool_id}-{index}"
        self._client = client()
        self._container = None
        self._sock = None
        self._reader: LineReader | None = None

    def create(self):
        """The container, created but not started (start() attaches to it first, then starts it)."""
        cfg = self.config
        tmpfs_opts = f"rw,exec,nosuid,nodev,size={cfg.scratch_mb}m,nr_inodes={cfg.scratch_inodes},mode=1777"
        shm_opts = f"rw,noexec,nosuid,nodev,size={cfg.shm_mb}m,nr_inodes={cfg.scratch_inodes},mode=1777"
        return self._client.containers.create(
            cfg.image, ["python3", "-I", "-S", RUNNER_MOUNT, "serve"], name=self.name,
            # detach=False makes docker-py set StdinOnce: when this process dies the attach closes,
            # the runner reads EOF and exits, and auto_remove deletes the container.
            user="0:0", stdin_open=True, tty=False, detach=False, auto_remove=True,
            network_mode="none", read_only=True, working_dir="/work", hostname="sandbox",
            tmpfs={"/work": tmpfs_opts, "/tmp": tmpfs_opts.replace(",exec,", ",noexec,"),
                   "/dev/shm": shm_opts},
            mem_limit=f"{cfg.worker_memory_mb}m",
            memswap_limit=f"{cfg.worker_memory_mb}m", pids_limit=cfg.worker_pids,
            nano_cpus=int(cfg.worker_cpus * 1e9), cap_drop=["ALL"], cap_add=["SETUID", "SETGID", "KILL"],
            security_opt=["no-new-privileges"], environment={},
            log_config=LogConfig(type=LogConfig.types.NONE),
            ulimits=[Ulimit(name="core", soft=0, hard=0)], ipc_mode="private",
            volumes={str(self.runner_path): {"bind": RUNNER_MOUNT, "mode": "ro"}},
            labels={LABEL: "1", POOL_LABEL: self.pool_id, OWNER_LABEL: owner_id()},
        )

    def start(self) -> None:
        try:
            self._container = self.create()
            self._sock = self._container.attach_socket(params={"stdin": 1, "stdout": 1, "stream": 1})
            self._container.start()
        except DockerException as exc:
            self.close()
            raise WorkerError(f"{self.name}: could not start container: {exc}") from None
        raw = self._sock._sock  # docker-py exposes the raw socket of the hijacked HTTP connection
        self._reader = LineReader(_Demux(raw).read_some)
        hello = handshake(self.uid, self.config.wipe_timeout_s)
        check_handshake(self.request(hello, self.config.startup_timeout_s), self.name, self.uid)

    def request(self, payload: dict, timeout_s: float) -> dict:
        if self._sock is None or self._reader is None:
            raise WorkerError(f"{self.name}: not started")
        try:
            self._sock._sock.sendall(encode_request(payload))
        except OSError as exc:
            raise WorkerError(f"{self.name}: send failed: {exc}") from None
        return decode_reply(self._reader.readline(time.monotonic() + timeout_s), self.name)

    def kill(self) -> None:
        """SIGKILL the container (safe from any thread): the owner's pending read then sees EOF."""
        container = self._container
        if container is not None:
            try:
                container.kill()
            except DockerException:
                pass

    def close(self) -> None:
        """Remove the container and its attach socket (owner thread only)."""
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass
        container, self._container = self._container, None
        if container is not None:
            try:
                container.remove(force=True)
            except DockerException:
                pass

    @property
    def container_id(self) -> str | None:
        return self._container.id if self._container is not None else None


def _labelled_containers(pool_id: str | None) -> list:
    label = f"{POOL_LABEL}={pool_id}" if pool_id else LABEL
    return client().containers.list(all=True, filters={"label": label}, ignore_removed=True)


def leaked_containers(pool_id: str | None = None) -> list[str]:
    """Names of sandbox containers still present (for one pool, or any pool)."""
    return [c.name for c in _labelled_containers(pool_id)]


def remove_containers(pool_id: str | None = None) -> int:
    found = _labelled_containers(pool_id)
    for c in found:
        try:
            c.remove(force=True)
        except DockerException:  # already gone (auto_remove) or being removed
            pass
    return len(found)
