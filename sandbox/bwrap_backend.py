"""bubblewrap backend: the same runner in a bwrap jail, for hosts without Docker (e.g. SLURM nodes).

Isolation of each jail: new user, PID, network, IPC, UTS and cgroup namespaces (`--unshare-all`), no
nested user namespaces (`--disable-userns`), a fresh session (no terminal injection), the runner as PID 1
(`--as-pid-1`), dies with its parent, empty environment. The file system is the host's /usr (and the
merged-/usr symlinks) read-only, a private /proc and minimal /dev, size-capped tmpfs /work, /tmp and
/dev/shm, the runner script and the PCH directory read-only. Nothing else of the host (no /home, /root,
/etc, /var, /run, project files or sockets) is visible. When started as root, each jail runs under an
unprivileged host uid unique to the worker. Not isolated beyond rlimits: total memory of a jail (no
cgroup; bounded by RLIMIT_AS x RLIMIT_NPROC) and CPU share.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import select
import shutil
import subprocess
import time
from pathlib import Path

from sandbox.config import SandboxConfig
from sandbox.image import PCH_FLAG_SETS, PCH_MOUNT, RUNNER_MOUNT
from sandbox.worker import RUNNER_PATH, LineReader, WorkerError, decode_reply, encode_request

# Host paths the jail sees read-only when they exist (ld.so's cache and g++/cc alternatives).
_HOST_ETC = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/alternatives")


def cache_dir(config: SandboxConfig) -> Path:
    if config.bwrap_cache_dir is not None:
        return config.bwrap_cache_dir
    return Path("/var/cache/crucible") if os.getuid() == 0 else Path.home() / ".cache" / "crucible"


def prepare_host_files(config: SandboxConfig) -> tuple[Path, Path]:
    """A world-readable copy of the runner and the host compiler's PCH (so an unprivileged jail uid can
    read them even when the checkout lives under /root). Returns (runner_path, pch_dir)."""
    from sandbox import runner

    root = cache_dir(config)
    pch_dir = root / "pch"
    pch_dir.mkdir(parents=True, exist_ok=True)
    for flags in PCH_FLAG_SETS:
        target = pch_dir / runner.pch_key(list(flags)) / "bits" / "stdc++.h.gch"
        if not target.exists():
            runner.build_pch(str(pch_dir), list(flags))
    code = RUNNER_PATH.read_bytes()
    runner_copy = root / f"runner-{hashlib.sha256(code).hexdigest()[:12]}.py"
    if not runner_copy.exists():
        tmp = runner_copy.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(code)
        tmp.replace(runner_copy)
    for dirpath, dirnames, filenames in os.walk(root):
        os.chmod(dirpath, 0o755)
        for f in filenames:
            os.chmod(os.path.join(dirpath, f), 0o644)
    return runner_copy, pch_dir


def _root_binds() -> list[str]:
    args = ["--ro-bind", "/usr", "/usr"]
    for top in ("bin", "sbin", "lib", "lib64", "lib32", "libx32"):
        path = Path("/") / top
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    for etc in _HOST_ETC:
        args += ["--ro-bind-try", etc, etc]
    return args


def bwrap_argv(config: SandboxConfig, runner_path: Path, pch_dir: Path) -> list[str]:
    size = str(config.scratch_mb << 20)
    return [
        shutil.which("bwrap") or "bwrap",
        "--unshare-all", "--unshare-user", "--disable-userns", "--uid", "1000", "--gid", "1000",
        "--hostname", "sandbox", "--die-with-parent", "--new-session", "--as-pid-1", "--clearenv",
        *_root_binds(),
        "--proc", "/proc", "--dev", "/dev",
        "--size", size, "--tmpfs", "/work", "--size", size, "--tmpfs", "/tmp",
        "--size", str(config.shm_mb << 20), "--tmpfs", "/dev/shm",
        "--ro-bind", str(runner_path), RUNNER_MOUNT,
        "--ro-bind", str(pch_dir), PCH_MOUNT,
        "--remount-ro", "/",  # bwrap's own root tmpfs would otherwise be writable (and persist)
        "--chdir", "/work", "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "LANG", "C.UTF-8",
        "--", "/usr/bin/python3", "-I", "-S", RUNNER_MOUNT, "serve",
    ]


def prepare(config: SandboxConfig) -> list[str]:
    """Once per pool: check bwrap, stage host files; returns the jail's argv for every worker."""
    if shutil.which("bwrap") is None:
        raise WorkerError("bwrap is not installed (apt-get install bubblewrap); see `python -m sandbox doctor`")
    return bwrap_argv(config, *prepare_host_files(config))


class BwrapWorker:
    def __init__(self, config: SandboxConfig, prepared: list[str], uid: int, pool_id: str, index: int) -> None:
        self.config = config
        self.uid = uid
        self.name = f"crucible-bwrap-{pool_id}-{index}"
        self._proc: subprocess.Popen | None = None
        self._jail_pid: int | None = None
        self._argv = prepared
        self._reader: LineReader | None = None

    def _drop_privileges(self) -> None:  # runs in the child before exec
        if os.getuid() == 0:
            os.setgroups([])
            os.setgid(self.uid)
            os.setuid(self.uid)

    def start(self) -> None:
        info_r, info_w = os.pipe()
        argv = [self._argv[0], "--info-fd", str(info_w), *self._argv[1:]]
        try:
            self._proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, pass_fds=(info_w,),
                stderr=subprocess.DEVNULL, preexec_fn=self._drop_privileges, start_new_session=True,
                env={"PATH": "/usr/bin:/bin"}, cwd="/",
            )
        except OSError as exc:
            os.close(info_r)
            raise WorkerError(f"{self.name}: could not start bwrap: {exc}") from None
        finally:
            os.close(info_w)
        # bwrap reports the jail's PID 1 (host pid): killing it ends every process in the jail.
        with os.fdopen(info_r) as info:
            try:
                self._jail_pid = int(json.loads(info.read() or "{}").get("child-pid", 0)) or None
            except ValueError:
                self._jail_pid = None
        fd = self._proc.stdout.fileno()

        def read_some(timeout_s: float) -> bytes:
            if not select.select([fd], [], [], timeout_s)[0]:
                raise WorkerError(f"{self.name}: runner did not reply in time")
            return os.read(fd, 1 << 20)

        self._reader = LineReader(read_some)
        reply = self.request({"op": "ping"}, self.config.startup_timeout_s)
        if not reply.get("ok"):
            raise WorkerError(f"{self.name}: bad handshake {reply}")

    def request(self, payload: dict, timeout_s: float) -> dict:
        if self._proc is None or self._reader is None:
            raise WorkerError(f"{self.name}: not started")
        try:
            self._proc.stdin.write(encode_request(payload))
            self._proc.stdin.flush()
        except (OSError, ValueError) as exc:
            raise WorkerError(f"{self.name}: send failed: {exc}") from None
        return decode_reply(self._reader.readline(time.monotonic() + timeout_s), self.name)

    def kill(self) -> None:
        """SIGKILL the jail (safe from any thread): the owner's pending read then sees EOF."""
        proc = self._proc
        for kill, pid in ((os.kill, self._jail_pid), (os.killpg, proc.pid if proc else None)):
            if pid:
                try:
                    kill(pid, 9)
                except ProcessLookupError:
                    pass

    def close(self) -> None:
        """Kill, release the pipes and wait until the jail is gone (owner thread only)."""
        self.kill()
        proc, self._proc = self._proc, None
        jail_pid, self._jail_pid = self._jail_pid, None
        if proc is None:
            return
        for stream in (proc.stdin, proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        proc.wait()
        deadline = time.monotonic() + 10  # the jail's PID 1 is reaped by the host's init, not by us
        while jail_pid and os.path.exists(f"/proc/{jail_pid}") and time.monotonic() < deadline:
            time.sleep(0.01)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None


def new_uid_base(num_workers: int) -> int:
    """A random block of unprivileged host uids, one per worker, unlikely to collide with other pools."""
    return 200_000 + secrets.randbelow(1_000_000) * 256 if num_workers <= 256 else 200_000
