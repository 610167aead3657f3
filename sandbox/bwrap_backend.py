"""bubblewrap backend: the same runner in a bwrap jail, for hosts without Docker (e.g. SLURM nodes).

Isolation of each jail: new PID, network, IPC, UTS and cgroup namespaces, a fresh session (no terminal
injection), the runner as PID 1 (`--as-pid-1`), dies with its parent, empty environment. The file system
is the host's /usr (and the merged-/usr symlinks) read-only, a private /proc and minimal /dev, size-capped
tmpfs /work, /tmp and /dev/shm, the runner script and the PCH directory read-only. Nothing else of the host
(no /home, /root, /etc, /var, /run, project files or sockets) is visible.

Credentials. Started as root, bwrap runs privileged: no user namespace, the runner is root with only
CAP_SETUID, CAP_SETGID and CAP_KILL, and every job process drops to an unprivileged host uid unique to the
worker, with no capabilities and the seccomp filter of sandbox/seccomp.py. Started as another user (the
SLURM case), bwrap makes an unprivileged user namespace mapping that one uid (`--disable-userns` forbids
nesting): job and runner then share the uid, so a program can touch its runner's limits and priority; the
seccomp filter still applies. `doctor` names which mode a host gets. Not isolated beyond rlimits, the
filter and the wipe deadline: total memory of a jail (no cgroup) and CPU share.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import select
import shutil
import subprocess
import time
from pathlib import Path

from sandbox import cgroup, hostfiles
from sandbox.config import SandboxConfig
from sandbox.image import PCH_FLAG_SETS, PCH_MOUNT, RUNNER_MOUNT
from sandbox.worker import (LineReader, WorkerError, check_handshake, decode_reply, encode_request,
                            handshake)

log = logging.getLogger(__name__)

# Host paths the jail sees read-only when they exist (ld.so's cache and g++/cc alternatives).
JOBS_CGROUP_MOUNT = "/opt/crucible/jobs-cgroup"
_HOST_ETC = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/alternatives")


def cache_dir(config: SandboxConfig) -> Path:
    return config.bwrap_cache_dir if config.bwrap_cache_dir is not None else hostfiles.default_cache_dir()


def prepare_host_files(config: SandboxConfig) -> tuple[Path, Path]:
    """A world-readable copy of the runner and the host compiler's PCH (so an unprivileged jail uid can
    read them even when the checkout lives under /root), in a cache directory checked by
    hostfiles.trusted_dir. Returns (runner_path, pch_dir)."""
    from sandbox import runner

    root = hostfiles.trusted_dir(cache_dir(config))
    pch_dir = hostfiles.trusted_dir(root / "pch")
    for flags in PCH_FLAG_SETS:
        target = pch_dir / runner.pch_key(list(flags)) / "bits" / "stdc++.h.gch"
        if not target.exists():
            runner.build_pch(str(pch_dir), list(flags))
    runner_copy = hostfiles.runner_copy(root)
    hostfiles.make_world_readable(pch_dir)
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


def privileged() -> bool:
    """Root on the host: the runner and its jobs get different uids (see the module docstring)."""
    return os.getuid() == 0


def bwrap_argv(config: SandboxConfig, runner_path: Path, pch_dir: Path) -> list[str]:
    size = str(config.scratch_mb << 20)
    if privileged():
        identity = ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
                    "--unshare-cgroup-try", "--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID",
                    "--cap-add", "CAP_KILL"]
    else:
        identity = ["--unshare-all", "--unshare-user", "--disable-userns", "--uid", "1000", "--gid", "1000"]
    return [
        shutil.which("bwrap") or "bwrap", *identity,
        "--hostname", "sandbox", "--die-with-parent", "--new-session", "--as-pid-1", "--clearenv",
        *_root_binds(),
        "--proc", "/proc", "--dev", "/dev",
        "--perms", "1777", "--size", size, "--tmpfs", "/work",
        "--perms", "1777", "--size", size, "--tmpfs", "/tmp",
        "--perms", "1777", "--size", str(config.shm_mb << 20), "--tmpfs", "/dev/shm",
        "--perms", "0755", "--dir", "/opt", "--perms", "0755", "--dir", os.path.dirname(RUNNER_MOUNT),
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
    if config.bwrap_cgroup:
        cgroup.reap_orphans(config.bwrap_cgroup_parent)
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
        self._cgroup: cgroup.JailCgroup | None = None
        self._starts = 0

    def _enter_jail_limits(self) -> None:  # in the child, before it execs bwrap
        if self._cgroup is not None:
            self._cgroup.join()

    def start(self) -> None:
        self._starts += 1
        cfg = self.config
        if cfg.bwrap_cgroup and cgroup.available(cfg.bwrap_cgroup_parent):
            try:
                name = cgroup.jail_name(self.name, self._starts)
                self._cgroup = cgroup.JailCgroup(name, cfg.worker_memory_mb, cfg.worker_pids,
                                                 cfg.bwrap_cgroup_parent)
            except OSError as exc:
                raise WorkerError(f"{self.name}: cannot make its cgroup: {exc}") from None
        info_r, info_w = os.pipe()
        jail_cgroup = []  # the jobs' cgroup, for the runner to move job processes into
        if self._cgroup is not None:
            jail_cgroup = ["--bind", str(self._cgroup.jobs_dir), JOBS_CGROUP_MOUNT]
        cut = self._argv.index("--remount-ro")
        argv = [self._argv[0], "--info-fd", str(info_w), *self._argv[1:cut], *jail_cgroup, *self._argv[cut:]]
        if self._cgroup is not None and self._cgroup.v2 and "--unshare-cgroup-try" in argv:
            argv.remove("--unshare-cgroup-try")  # a namespace rooted at supervisor/ would hide jobs/ (nsdelegate)
        try:
            self._proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, pass_fds=(info_w,),
                stderr=subprocess.DEVNULL, start_new_session=True, preexec_fn=self._enter_jail_limits,
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
        job_uid = self.uid if privileged() else None
        hello = handshake(job_uid, self.config.wipe_timeout_s)
        if self._cgroup is not None:
            hello["job_cgroup_procs"] = f"{JOBS_CGROUP_MOUNT}/cgroup.procs"
        check_handshake(self.request(hello, self.config.startup_timeout_s), self.name, job_uid)

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
        """Kill, release the pipes, wait until the jail is gone and remove its cgroup (owner thread only)."""
        self.kill()
        proc, self._proc = self._proc, None
        jail_pid, self._jail_pid = self._jail_pid, None
        if proc is not None:
            for stream in (proc.stdin, proc.stdout):
                try:
                    stream.close()
                except OSError:
                    pass
            proc.wait()
            deadline = time.monotonic() + 10  # the jail's PID 1 is reaped by the host's init, not by us
            while jail_pid and os.path.exists(f"/proc/{jail_pid}") and time.monotonic() < deadline:
                time.sleep(0.01)
        group, self._cgroup = self._cgroup, None
        if group is not None and not group.remove():
            log.warning("%s: cgroup %s still busy; left in place", self.name, list(group.dirs.values()))

    @property
    def jail_cgroup(self) -> cgroup.JailCgroup | None:
        return self._cgroup

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None


def new_uid_base(num_workers: int) -> int:
    """A random block of unprivileged host uids, one per worker, unlikely to collide with other pools."""
    return 200_000 + secrets.randbelow(1_000_000) * 256 if num_workers <= 256 else 200_000
