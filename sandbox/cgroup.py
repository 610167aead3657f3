"""A memory and pids cgroup per bubblewrap jail, where the host lets us make one.

Why: RLIMIT_AS counts a process's address space, not what the kernel keeps for it: tmpfs inodes and
dentries, pipe and socket buffers. Docker puts every container in a memory cgroup; bubblewrap has none, so
without this a jail's kernel memory is bounded only by time. With it, the jail's total (user and kernel
memory, scratch tmpfs pages included) stops at `worker_memory_mb` and its processes at `worker_pids`.

Where: cgroup v1 hierarchies for `memory` and `pids` that we may write (root, or a delegated subtree), under
our own cgroup. cgroup v2 hosts need a delegated subtree with both controllers enabled (a systemd scope
with Delegate=yes); pass it as `SandboxConfig.bwrap_cgroup_parent`. Otherwise there is no cgroup, and
`doctor` says so.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import time
from pathlib import Path

from sandbox.worker import process_start_time

log = logging.getLogger(__name__)

V1_ROOT = Path("/sys/fs/cgroup")
CONTROLLERS = ("memory", "pids")


def _own_v1_path(controller: str) -> str | None:
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, names, path = line.split(":", 2)
        if controller in names.split(","):
            return path
    return None


def v1_parents() -> dict[str, Path] | None:
    """Our own cgroup in the v1 memory and pids hierarchies, if we may create children there."""
    parents = {}
    for controller in CONTROLLERS:
        path = _own_v1_path(controller)
        if path is None:
            return None
        parent = V1_ROOT / controller / path.lstrip("/")
        if not (parent / "cgroup.procs").exists() or not os.access(parent, os.W_OK):
            return None
        parents[controller] = parent
    return parents


def v2_parent(parent: Path) -> dict[str, Path] | None:
    """A delegated cgroup v2 directory whose children get memory and pids."""
    try:
        enabled = (parent / "cgroup.subtree_control").read_text().split()
    except OSError:
        return None
    if not all(c in enabled for c in CONTROLLERS) or not os.access(parent, os.W_OK):
        return None
    return {"v2": parent}


def available(v2_delegated: Path | None = None) -> str | None:
    """Where jail cgroups go (for `doctor`), or None."""
    found = v2_parent(v2_delegated) if v2_delegated else v1_parents()
    return None if found is None else ", ".join(str(p) for p in found.values())


HEADROOM_MB = 64  # the supervisor's own memory above the jobs' limit


class JailCgroup:
    """One jail's cgroups: made before the jail starts, joined by the process that execs bwrap, removed
    once the jail is gone.

    Layout (per hierarchy): NAME holds the whole jail (memory = jobs' limit + HEADROOM_MB, pids), and
    NAME/jobs holds every job process (memory = the jobs' limit), which the runner moves there before exec
    through a bind mount. Job memory that outlives its processes (tmpfs files and inodes) is charged to
    NAME/jobs and stops there, so the supervisor always has HEADROOM_MB to clean up in: without the split,
    the OOM killer's only choice after a job is the runner, and the job would end as SANDBOX_ERROR."""

    def __init__(self, name: str, memory_mb: int, pids: int, v2_delegated: Path | None = None) -> None:
        parents = v2_parent(v2_delegated) if v2_delegated else v1_parents()
        if parents is None:
            raise OSError(errno.ENOTSUP, "no writable memory+pids cgroup")
        self.v2 = "v2" in parents
        self.dirs = {controller: parent / name for controller, parent in parents.items()}
        total, jobs = str((memory_mb + HEADROOM_MB) << 20), str(memory_mb << 20)
        for controller, d in self.dirs.items():
            d.mkdir(exist_ok=True)
            if self.v2:
                _write(d / "cgroup.subtree_control", "+memory +pids")
                for leaf, limit in (("supervisor", total), ("jobs", jobs)):
                    (d / leaf).mkdir(exist_ok=True)
                    _write(d / leaf / "memory.max", limit)
                    _write(d / leaf / "memory.swap.max", "0", missing_ok=True)
                _write(d / "memory.max", total)
                _write(d / "pids.max", str(pids))
            elif controller == "memory":  # v1: user and kernel memory together, and no swap either
                _write(d / "memory.limit_in_bytes", total)
                _write(d / "memory.memsw.limit_in_bytes", total, missing_ok=True)
                (d / "jobs").mkdir(exist_ok=True)
                _write(d / "jobs" / "memory.limit_in_bytes", jobs)
                _write(d / "jobs" / "memory.memsw.limit_in_bytes", jobs, missing_ok=True)
            else:
                _write(d / "pids.max", str(pids))

    @property
    def jobs_dir(self) -> Path:
        """The directory the runner's job processes join (bind-mounted into the jail)."""
        return (self.dirs["v2"] if self.v2 else self.dirs["memory"]) / "jobs"

    def join(self) -> None:
        """Move the calling process in (from the child, before exec: every jail process inherits it)."""
        for d in self.dirs.values():
            _write((d / "supervisor" if self.v2 else d) / "cgroup.procs", str(os.getpid()))

    def peak_memory_bytes(self) -> int | None:
        for d in self.dirs.values():
            for name in ("memory.max_usage_in_bytes", "memory.peak"):  # v1 / v2; the whole jail
                try:
                    return int((d / name).read_text())
                except OSError:
                    continue
        return None

    def remove(self, timeout_s: float = 5.0) -> bool:
        """rmdir every directory (a cgroup empties a moment after its last process is reaped)."""
        deadline = time.monotonic() + timeout_s
        left = [self.jobs_dir] + ([d / "supervisor" for d in self.dirs.values()] if self.v2 else [])
        left += list(self.dirs.values())
        while left and time.monotonic() < deadline:
            for d in list(left):  # children first
                try:
                    d.rmdir()
                    left.remove(d)
                except FileNotFoundError:
                    left.remove(d)
                except OSError:
                    break
            if left:
                time.sleep(0.02)
        return not left


def jail_name(worker: str, n: int) -> str:
    """`worker`'s n-th cgroup, stamped with the owning process (pid and start time) for reap_orphans."""
    pid = os.getpid()
    return f"{worker}-{n}-o{pid}-{process_start_time(pid)}"


_OWNER = re.compile(r"-o(\d+)-(\d+)$")


def reap_orphans(v2_delegated: Path | None = None) -> list[str]:
    """Remove jail cgroups whose owning process is gone (a SIGKILLed pool cannot clean up; its jails die with
    it, by --die-with-parent, and leave empty cgroups behind)."""
    parents = v2_parent(v2_delegated) if v2_delegated else v1_parents()
    removed = []
    for parent in (parents or {}).values():
        for d in parent.glob("crucible-bwrap-*"):
            owner = _OWNER.search(d.name)
            if owner is None or process_start_time(int(owner.group(1))) == owner.group(2):
                continue
            try:
                for child in ("jobs", "supervisor"):
                    if (d / child).is_dir():
                        (d / child).rmdir()
                d.rmdir()
                removed.append(str(d))
            except OSError:  # processes still inside: next time
                pass
    if removed:
        log.warning("removed %d bwrap jail cgroups left by dead processes", len(removed))
    return removed


def _write(path: Path, value: str, missing_ok: bool = False) -> None:
    try:
        with open(path, "w") as f:
            f.write(value)
    except FileNotFoundError:
        if not missing_ok:
            raise
