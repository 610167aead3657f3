"""The job runner that lives inside a sandbox jail (Docker container or bubblewrap), as its PID 1.

Standard library only: it runs under the jail's own `python3`, not the project's venv.

Protocol: one JSON object per line on stdin (a request), one JSON object per line on stdout (the reply).
Only this process holds stdin/stdout; every job process gets a fresh stdin (a memfd), pipes for
stdout/stderr and nothing else.

Why PID 1: inside its PID namespace the init process cannot be killed by a signal it has no handler for,
so `kill(-1, SIGKILL)` from a job (or from us) ends every other process and never the runner. After each
stage we sweep with `kill(-1, SIGKILL)`, which is how orphaned daemons and escaped process groups die.

Supervisor and program have different credentials (when the jail gives the runner root with CAP_SETUID/
CAP_SETGID/CAP_KILL, as both backends do when started as root): every job process drops to the worker's
own unprivileged uid, with no capabilities, no_new_privs and the seccomp filter of sandbox/seccomp.py,
before exec.
So a program can neither prlimit, renice, re-pin, ptrace nor signal the runner, and cannot open its
/proc files. Scratch cleanup runs as the job's uid too (in a helper process), so it can undo anything a
program could build, in bounded time.

Per stage limits are rlimits set in the forked child before exec (CPU, address space, a separate stack
limit, file size, processes, open files, no core dumps) plus a wall-clock deadline and an output-byte cap
enforced here. CPU time is accounted for the whole stage: every process of the stage ends as a child of
PID 1 (directly, or reparented when its parent died), and its rusage comes back when we reap it.
The jail adds what rlimits cannot (network, file system view, cgroup memory/pids for Docker).
"""

from __future__ import annotations

import base64
import ctypes
import errno
import hashlib
import json
import os
import re
import resource
import select
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import time

WORK_DIR = "/work"
# Every place a job can write. /dev/mqueue exists in Docker containers (mode 1777): the filter denies the mq_*
# calls, but a program can still create names there with open(2).
SCRATCH_DIRS = ("/work", "/tmp", "/dev/shm", "/dev/mqueue")
PCH_ROOT = "/opt/crucible/pch"
JOB_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C",  # plain ASCII quotes in compiler messages
    "HOME": "/tmp",
    "TMPDIR": "/tmp",
}
# Flags that only matter at link time, or only change diagnostics: they do not affect PCH validity.
_PCH_NEUTRAL_PREFIXES = ("-l", "-L", "-Wl,", "-W", "-pedantic", "-fdiagnostics")
_PR_SET_DUMPABLE = 4
_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
DEFAULT_STACK_MB = 64
WIPE_TIMEOUT_S = 5.0  # per cleanup, unless the handshake says otherwise (SandboxConfig.wipe_timeout_s)
OWN_WIPE_S = 1.0  # the runner's own files after the job's: at most this much past the cleanup deadline
_LIBC = ctypes.CDLL(None, use_errno=True)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class JobIdentity:
    """Who job processes run as, and the syscall filter they run under (set by the host's handshake)."""

    uid: int | None = None  # None: same credentials as the runner (a non-root bubblewrap host)
    wipe_timeout_s: float = WIPE_TIMEOUT_S
    seccomp: tuple | None = None  # (_SockFprog, its buffer): kept alive for every fork
    cgroup_procs: str | None = None  # bwrap: the jobs' cgroup (memory apart from ours, see sandbox/cgroup.py)


def configure(job_uid: int | None, seccomp_b64: str | None, wipe_timeout_s: float = WIPE_TIMEOUT_S,
              cgroup_procs: str | None = None) -> None:
    if job_uid is not None and os.getuid() != 0:
        raise PermissionError(f"job uid {job_uid} requested but the runner is uid {os.getuid()}, not root")
    JobIdentity.uid = job_uid
    JobIdentity.wipe_timeout_s = float(wipe_timeout_s)
    JobIdentity.cgroup_procs = cgroup_procs
    JobIdentity.seccomp = None
    if seccomp_b64:
        code = base64.b64decode(seccomp_b64)
        buf = ctypes.create_string_buffer(code, len(code))
        JobIdentity.seccomp = (_SockFprog(len(code) // 8, ctypes.addressof(buf)), buf)


def _drop_to_job_uid() -> None:
    if JobIdentity.uid is not None:
        os.setgroups([])
        os.setgid(JobIdentity.uid)
        os.setuid(JobIdentity.uid)  # from root to another uid: every capability is gone


def _become_job() -> None:
    """In a forked child: move to the jobs' cgroup, drop to the job's credentials and filter (irreversible).
    Raises on failure."""
    if JobIdentity.cgroup_procs is not None:
        with open(JobIdentity.cgroup_procs, "w") as f:
            f.write(str(os.getpid()))
    _drop_to_job_uid()
    if _LIBC.prctl(_PR_SET_NO_NEW_PRIVS, ctypes.c_ulong(1), ctypes.c_ulong(0), ctypes.c_ulong(0),
                   ctypes.c_ulong(0)) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    if JobIdentity.seccomp is not None:
        prog = JobIdentity.seccomp[0]
        if _LIBC.prctl(_PR_SET_SECCOMP, ctypes.c_ulong(_SECCOMP_MODE_FILTER),
                       ctypes.c_void_p(ctypes.addressof(prog)), ctypes.c_ulong(0), ctypes.c_ulong(0)) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")


def check_identity() -> None:
    """Fork a child that becomes the job identity and exits: a filter the kernel rejects, or a uid we
    cannot take, fails the handshake (the host's problem), never a job."""
    pid = os.fork()
    if pid == 0:
        try:
            _become_job()
            os._exit(0)
        except BaseException:  # noqa: BLE001
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    if not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0):
        raise RuntimeError(f"cannot run jobs as uid {JobIdentity.uid} under the seccomp filter")
SOURCE_SUFFIXES = (".cpp", ".cc", ".cxx", ".c++", ".C")  # translation units; other files are headers


def pch_key(flags: list[str]) -> str:
    """Directory name for the bits/stdc++.h PCH matching these compile flags."""
    relevant = [f for f in flags if not f.startswith(_PCH_NEUTRAL_PREFIXES)]
    return hashlib.sha256("\0".join(relevant).encode()).hexdigest()[:16]


def build_pch(root: str, flags: list[str], compiler: str = "g++") -> str:
    """Precompile bits/stdc++.h for `flags` into root/<key>/bits/stdc++.h.gch (trusted input only)."""
    found = subprocess.run(
        [compiler, *flags, "-x", "c++", "-fsyntax-only", "-H", "-"],
        input=b"#include <bits/stdc++.h>\n", capture_output=True, check=True,
    )
    header = found.stderr.decode().splitlines()[0].lstrip(". ").strip()
    out_dir = os.path.join(root, pch_key(flags), "bits")
    os.makedirs(out_dir, exist_ok=True)
    tmp = os.path.join(out_dir, f".stdc++.h.gch.{os.getpid()}")
    subprocess.run([compiler, *flags, "-x", "c++-header", header, "-o", tmp], check=True)
    os.replace(tmp, os.path.join(out_dir, "stdc++.h.gch"))
    return os.path.dirname(out_dir)


def fast_linker_flags(flags: list[str]) -> list[str]:
    """`-fuse-ld=` for the fastest installed linker (same output, 1.5-2x faster links), unless the job
    chose its own linker or passes linker options that only the default linker may understand."""
    if any(f.startswith(("-fuse-ld", "-Wl,", "-Xlinker")) for f in flags):
        return []
    for name in ("mold", "lld", "gold"):
        if shutil.which(f"ld.{name}", path=JOB_ENV["PATH"]):
            return [f"-fuse-ld={name}"]
    return []


def split_flags(flags: list[str]) -> tuple[list[str], list[str]]:
    """Compile flags go before the sources, link flags (-l/-L/-Wl,) after them (--as-needed order)."""
    link = [f for f in flags if f.startswith(("-l", "-L", "-Wl,"))]
    return [f for f in flags if f not in link], link


def _apply_limits(limits: dict) -> None:
    """Runs in the forked child just before exec."""
    mem = int(limits["memory_mb"]) << 20
    cpu = max(1, int(limits["cpu_s"] + 0.999))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    if limits.get("address_space", True):  # False for sanitized runs: ASan's shadow needs terabytes of it
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    # Not the address-space limit: glibc sizes every thread's stack from RLIMIT_STACK, so a stack limit as
    # large as the address space leaves no room for a second thread.
    stack = min(int(limits.get("stack_mb", DEFAULT_STACK_MB)) << 20, mem)
    resource.setrlimit(resource.RLIMIT_STACK, (stack, stack))
    fsize = int(limits["max_file_mb"]) << 20
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    # NPROC counts every process of the job's uid: only the job's own when the runner is another uid; the
    # runner (and bwrap's monitor) too when they share one.
    nproc = int(limits["max_processes"]) + (0 if JobIdentity.uid is not None else 2)
    resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
    nofile = int(limits["max_open_files"])
    resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_MEMLOCK, (0, 0))
    try:  # the OOM killer should pick a job, never the runner
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("1000")
    except OSError:
        pass


def _spawn(argv: list[str], limits: dict, stdin_fd: int, out_w: int, err_w: int, report_w: int,
           env: dict[str, str]) -> int:
    pid = os.fork()
    if pid:
        return pid
    try:  # child: never return into the runner's code
        os.setsid()
        for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        os.dup2(stdin_fd, 0)
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        os.closerange(3, report_w)
        os.closerange(report_w + 1, 65536)
        os.chdir(WORK_DIR)
        _apply_limits(limits)
        os.umask(0o022)  # the runner reads the compiler's output; nothing else shares the jail
        _become_job()
        os.execve(argv[0], argv, env)
    except BaseException as exc:  # noqa: BLE001 - report any exec failure to the parent
        code = exc.errno if isinstance(exc, OSError) and exc.errno else errno.EINVAL
        try:
            os.write(report_w, str(code).encode())
        finally:
            os._exit(127)
    os._exit(127)


def kill_all_others(reaped: dict | None = None) -> None:
    """SIGKILL every process we may signal (the whole jail but us) and reap them.

    `reaped` collects pid -> (status, rusage) of what was reaped, so a caller can still learn how its
    own child ended."""
    for _ in range(10000):
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            break
        _reap_zombies(reaped)
        time.sleep(0.0005)
    _reap_zombies(reaped)


def _reap_zombies(reaped: dict | None = None) -> None:
    for _ in range(4096):  # bounded: the caller comes back (a job cannot keep us here)
        try:
            pid, status, usage = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        if reaped is not None:
            reaped[pid] = (status, usage)


def execute(argv: list[str], limits: dict, stdin: bytes = b"", env: dict[str, str] | None = None) -> dict:
    """Run one process under `limits` (environment JOB_ENV plus `env`); returns its raw outcome (the host turns
    it into a verdict)."""
    stdin_fd = os.memfd_create("stdin")
    os.write(stdin_fd, stdin)
    os.lseek(stdin_fd, 0, os.SEEK_SET)
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    report_r, report_w = os.pipe2(os.O_CLOEXEC)
    start = time.monotonic()
    pid = _spawn(argv, limits, stdin_fd, out_w, err_w, report_w, {**JOB_ENV, **(env or {})})
    for fd in (stdin_fd, out_w, err_w, report_w):
        os.close(fd)
    exec_error = os.read(report_r, 32)
    os.close(report_r)
    pidfd = os.pidfd_open(pid)
    streams = {out_r: bytearray(), err_r: bytearray()}
    cap = int(limits["max_output_bytes"])
    total = 0
    killed_for = None
    sel = selectors.DefaultSelector()
    for fd in streams:
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ)
    sel.register(pidfd, selectors.EVENT_READ)
    deadline = start + float(limits["wall_s"])
    exited = False
    reaped: dict = {}  # pid -> (status, rusage) of every process of this stage, as they end
    while not exited and killed_for is None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            killed_for = "wall_limit"
            break
        _reap_zombies(reaped)  # orphans reparented to us: their CPU counts, and zombies hold NPROC slots
        for key, _ in sel.select(min(remaining, 0.05)):
            if key.fd == pidfd:
                exited = True
                continue
            total, closed = _read_some(key.fd, streams[key.fd], total, cap)
            if closed:
                sel.unregister(key.fd)
            if total > cap:
                killed_for = "output_limit"
    if killed_for:
        kill_all_others(reaped)
    if pid not in reaped:
        _, status, usage = os.wait4(pid, 0)
        reaped[pid] = (status, usage)
    wall = time.monotonic() - start
    kill_all_others(reaped)  # daemons and stray children die with the stage
    status, usage = reaped[pid]
    # The whole stage's CPU: the main process (with the children it waited for) plus every other process
    # that ended as our child. RLIMIT_CPU alone is per process: 16 forks x the limit would pass.
    cpu = sum(u.ru_utime + u.ru_stime for _, u in reaped.values())
    peak_kb = max(u.ru_maxrss for _, u in reaped.values())
    for fd in list(streams):  # all writers are dead now: drain to EOF
        if fd in sel.get_map():
            while True:
                total, closed = _read_some(fd, streams[fd], total, cap, blocking=True)
                if closed or total > cap:
                    break
        os.close(fd)
    sel.close()
    os.close(pidfd)
    if total > cap and killed_for is None:
        killed_for = "output_limit"
    return {
        "exit_code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
        "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
        "killed_for": killed_for,
        "exec_errno": int(exec_error) if exec_error else None,
        "cpu_s": round(cpu, 4),
        "wall_s": round(wall, 4),
        "memory_mb": round(peak_kb / 1024, 2),
        "processes": len(reaped),
        "stdout_b64": base64.b64encode(bytes(streams[out_r][:cap])).decode(),
        "stderr_b64": base64.b64encode(bytes(streams[err_r][:cap])).decode(),
        "output_bytes": total,
    }


def _read_some(fd: int, buf: bytearray, total: int, cap: int, blocking: bool = False) -> tuple[int, bool]:
    if blocking:
        os.set_blocking(fd, True)
    try:
        chunk = os.read(fd, 1 << 16)
    except BlockingIOError:
        return total, False
    if not chunk:
        return total, True
    if len(buf) < cap:
        buf += chunk[: cap - len(buf) + 1]
    return total + len(chunk), False


def _wipe_entry(top_fd: int, name: str, fresh: list[int]) -> bool:
    """Remove `name` from the directory `top_fd`, or make progress towards it. True if anything changed.

    A directory is emptied one level at a time: its files are unlinked and its subdirectories are moved up
    into `top_fd` (hoisted), so a tree of any depth is removed without recursion, long paths or one open
    descriptor per level. Modes are fixed first (a mode-000 directory can be neither listed nor moved)."""
    try:
        st = os.lstat(name, dir_fd=top_fd)
    except OSError:
        return False
    if not stat.S_ISDIR(st.st_mode):  # files, symlinks (never followed), fifos, sockets
        try:
            os.unlink(name, dir_fd=top_fd)
            return True
        except OSError:
            return False
    try:
        os.rmdir(name, dir_fd=top_fd)
        return True
    except OSError:
        pass
    try:
        if st.st_mode & 0o700 != 0o700:
            os.chmod(name, 0o700, dir_fd=top_fd)  # a directory (lstat), and nothing else runs now
        sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=top_fd)
    except OSError:
        return False
    changed = False
    try:
        for child in _names(sub):
            try:
                cst = os.lstat(child, dir_fd=sub)
                if not stat.S_ISDIR(cst.st_mode):
                    os.unlink(child, dir_fd=sub)
                    changed = True
                    continue
                if cst.st_mode & 0o700 != 0o700:  # moving a directory needs write permission on it
                    os.chmod(child, 0o700, dir_fd=sub)
            except OSError:
                continue
            for _ in range(100):  # a program may have made names like ours: take the next one
                fresh[0] += 1
                try:
                    os.rename(child, f".wipe-{fresh[0]}", src_dir_fd=sub, dst_dir_fd=top_fd)
                    changed = True
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.EISDIR, errno.ENOTDIR):
                        break
    finally:
        os.close(sub)
    return changed


def wipe_dir(top: str, deadline: float) -> bool:
    """Empty `top` (not itself) before `deadline`; True when it is empty."""
    try:
        top_fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return True
    fresh = [0]
    try:
        while time.monotonic() < deadline:
            seen = changed = False
            for name in _names(top_fd):
                seen = True
                if time.monotonic() >= deadline:
                    return False
                changed |= _wipe_entry(top_fd, name, fresh)
            if not seen:
                return True
            if not changed:
                return False
        return _is_empty(top_fd)
    except (OSError, MemoryError):
        return False
    finally:
        os.close(top_fd)


def _names(dir_fd: int):
    """Entry names of an open directory, streamed (a directory of millions of names is never held in
    memory; entries removed while we read are simply not seen again)."""
    with os.scandir(dir_fd) as entries:
        for entry in entries:
            yield entry.name


def _is_empty(dir_fd: int) -> bool:
    return next(_names(dir_fd), None) is None


def _wipe_all(deadline: float) -> None:
    for top in SCRATCH_DIRS:
        wipe_dir(top, deadline)
    if _sysv_ipc_in_use():  # the seccomp filter denies SysV IPC; this is the second line
        subprocess.run(["ipcrm", "--all"], capture_output=True, env=JOB_ENV, check=False,
                       timeout=max(0.1, deadline - time.monotonic()))


def wipe_scratch(timeout_s: float | None = None) -> bool:
    """Empty every writable place so nothing persists to the next job; True when all is clean.

    What the program made is removed by a helper running as the job's uid (it owns those files, so mode
    bits cannot stop it, and the runner needs no file capabilities); then the runner removes its own files.
    Bounded by `timeout_s`: a tree too large to remove in time leaves the jail unclean, and the host replaces
    the worker while the job keeps its verdict."""
    deadline = time.monotonic() + (JobIdentity.wipe_timeout_s if timeout_s is None else timeout_s)
    if scratch_is_clean():
        return True
    if JobIdentity.uid is not None and _job_left_something():
        pid = os.fork()
        if pid == 0:
            try:
                _drop_to_job_uid()
                _wipe_all(deadline)
            finally:
                os._exit(0)
        pidfd = os.pidfd_open(pid)
        try:
            if not select.select([pidfd], [], [], max(0.0, deadline - time.monotonic()))[0]:
                os.kill(pid, signal.SIGKILL)
        finally:
            os.close(pidfd)
        os.waitpid(pid, 0)
    try:  # our own files (sources, the binary) are few: they get a second of their own (OWN_WIPE_S)
        _wipe_all(max(deadline, time.monotonic() + OWN_WIPE_S))
    except (OSError, MemoryError, subprocess.SubprocessError):
        return False
    return scratch_is_clean()


def _job_left_something() -> bool:
    """Anything in scratch not owned by the runner (the common trivial run leaves only our binary, which
    the runner removes itself without forking a helper)."""
    me = os.getuid()
    for top in SCRATCH_DIRS:
        try:
            with os.scandir(top) as entries:
                if any(e.stat(follow_symlinks=False).st_uid != me for e in entries):
                    return True
        except OSError:
            return True
    return _sysv_ipc_in_use()


def _sysv_ipc_in_use() -> bool:
    for kind in ("shm", "sem", "msg"):
        try:
            with open(f"/proc/sysvipc/{kind}") as f:
                if len(f.readlines()) > 1:
                    return True
        except OSError:
            pass
    return False


def scratch_is_clean() -> bool:
    try:
        for d in SCRATCH_DIRS:
            if os.path.exists(d):
                with os.scandir(d) as entries:  # the first entry decides: O(1) however full
                    if next(entries, None) is not None:
                        return False
        return not _sysv_ipc_in_use()
    except OSError:
        return False


def _find(name: str) -> str:
    return shutil.which(name, path=JOB_ENV["PATH"]) or name


def _install_binary(data: bytes) -> str:
    """Our copy of the binary, owned by the runner (the program can run it but not replace it: /work is
    sticky and ours). Returns its path: /work/prog, or a fresh name if something we could not remove holds
    that one (a cleanup that ran out of time must not fail the job)."""
    for name in ("prog", f"prog-{time.monotonic_ns()}"):
        path = os.path.join(WORK_DIR, name)
        try:
            os.unlink(path)
        except OSError:
            pass
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o755)
        except OSError:
            continue
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return path
    raise OSError(errno.EEXIST, "cannot install the binary in /work")


def _not_started(code: int) -> dict:
    """The outcome of a run that could not start because of what the job itself left behind."""
    return {"exit_code": None, "signal": None, "killed_for": None, "exec_errno": code, "cpu_s": 0.0,
            "wall_s": 0.0, "memory_mb": 0.0, "stdout_b64": "", "stderr_b64": "", "output_bytes": 0,
            "processes": 0}


def _write_sources(src_dir: str, files: dict[str, str]) -> list[str]:
    """Write the job's files; returns the translation units in sorted order, the order Job.compile_key
    hashes them in (link order decides static initialisation order, so it must follow the cache key)."""
    os.mkdir(src_dir, 0o755)
    for name, text in files.items():
        with open(os.path.join(src_dir, name), "w", encoding="utf-8", errors="surrogateescape") as f:
            f.write(text)
    return [os.path.join(src_dir, n) for n in sorted(files) if n.endswith(SOURCE_SUFFIXES)]


# Libraries every C++ program links, whose exported symbols no private unit may provide to the others.
SYSTEM_LIBRARIES = ("libc.so.6", "libm.so.6", "libstdc++.so.6", "libgcc_s.so.1")
_exported: dict[str, frozenset[str]] = {}  # library -> its exported symbols (read once per runner)
_GROUP_MEMBER = re.compile(r"^\s+\[\s*(\d+)\]\s+\S")  # readelf -g: a section of a COMDAT group


def library_exports(names: list[str]) -> frozenset[str]:
    """The dynamic symbols the named libraries define (`-lcrypto` -> libcrypto.so); a library that cannot
    be found or read adds nothing. System files only, read once per runner."""
    found: set[str] = set()
    for name in names:
        if name not in _exported:
            try:
                path = subprocess.run([_find("g++"), f"-print-file-name={name}"], capture_output=True, text=True,
                                      timeout=30, env=JOB_ENV).stdout.strip()
                out = subprocess.run([_find("nm"), "-D", "--defined-only", "-P", path], capture_output=True,
                                     text=True, timeout=60, env=JOB_ENV).stdout
                _exported[name] = frozenset(line.split()[0].split("@")[0] for line in out.splitlines() if line)
            except (OSError, subprocess.SubprocessError, IndexError):
                _exported[name] = frozenset()
        found |= _exported[name]
    return frozenset(found)


def parse_readelf(listing: str) -> dict[str, dict]:
    """`readelf -g -s -W` of several objects -> per file: `undefined` (symbols it imports), `defined`
    (global and weak definitions outside COMDAT groups) and `comdat` (those inside a group)."""
    files: dict[str, dict] = {}
    current: dict = {}
    for line in listing.splitlines():
        if line.startswith("File: "):
            current = files.setdefault(line[6:].strip(), {"undefined": set(), "defined": set(), "comdat": set(),
                                                            "groups": set()})
            continue
        member = _GROUP_MEMBER.match(line)
        if member and current:
            current["groups"].add(member.group(1))
            continue
        cols = line.split()
        if len(cols) >= 8 and cols[0].endswith(":") and current:  # Num: Value Size Type Bind Vis Ndx Name
            bind, ndx, name = cols[4], cols[6], " ".join(cols[7:])
            if bind not in ("GLOBAL", "WEAK"):
                continue
            if ndx == "UND":
                current["undefined"].add(name)
            else:
                current["comdat" if ndx in current["groups"] else "defined"].add(name)
    return files


def private_symbols(units: dict[str, dict], private: list[str], libraries: frozenset[str]) -> tuple[list, list]:
    """(symbols to make local in the private units, symbols that make the build refused).

    The public units may take from a private one only what they import and no library exports (the
    prompt's functions and globals). Every other global or weak definition of a private unit becomes
    local, except COMDAT members (template and inline copies: the linker keeps the public unit's, which
    links first, and localising a member of a discarded group breaks the link). A private unit that
    defines, even as a COMDAT copy, a library symbol a public unit imports is refused: that is an
    interposition (`extern "C" inline int memcmp`) and no honest program needs it."""
    imported = set().union(*(u["undefined"] for name, u in units.items() if name not in private))
    keep = imported - libraries
    localise, refused = set(), set()
    for name in private:
        unit = units[name]
        localise |= unit["defined"] - keep
        refused |= (unit["defined"] | unit["comdat"]) & imported & libraries
    return sorted(localise), sorted(refused)


def _merge_stages(stages: list[dict]) -> dict:
    """One compile outcome from several processes: the first that failed (or the last), with every
    process's output in order and their times summed."""
    failed = next((r for r in stages if not _ok(r)), stages[-1])
    merged = dict(failed)
    for key in ("stdout_b64", "stderr_b64"):
        merged[key] = base64.b64encode(b"".join(base64.b64decode(r[key]) for r in stages)).decode()
    for key in ("cpu_s", "wall_s"):
        merged[key] = sum(r[key] for r in stages)
    merged["memory_mb"] = max(r["memory_mb"] for r in stages)
    return merged


def _ok(stage: dict) -> bool:
    return stage["exit_code"] == 0 and not stage["killed_for"]


def _write_list(names: list[str]) -> str:
    path = os.path.join(WORK_DIR, f"symbols-{time.monotonic_ns()}.txt")  # a name no job can foresee
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w") as f:
        f.write("".join(name + "\n" for name in names))
    return path


def build_with_private_units(sources: list[str], private: list[str], compile_flags: list[str],
                             link_flags: list[str], include_pch: list[str], limits: dict, prog: str) -> dict:
    """Compile each unit to an object, make the private units' definitions local where the other units
    must not reach them (private_symbols), link.

    Why: the tests' unit and the solution's unit link into one program, so a global the solution
    defines also serves the tests and the libraries: a `memcmp` that returns 0 makes every string and
    vector compare equal, an explicit specialisation of a template the tests instantiate replaces
    their copy, a second `main` replaces theirs. Afterwards the tests reach the solution only through
    what they declared and no library gives them (the prompt's functions and globals)."""
    gxx = _find("g++")
    flags = [*compile_flags, "-fno-lto"]  # readelf and objcopy need object code, not LTO bytecode
    objects = [os.path.join(WORK_DIR, os.path.basename(s).rsplit(".", 1)[0] + ".o") for s in sources]
    stages = [execute([gxx, *include_pch, *flags, "-I", os.path.dirname(sources[0]), "-c", *sources], limits)]
    if _ok(stages[-1]):
        stages.append(execute([_find("readelf"), "-g", "-s", "-W", *objects], limits))
    if _ok(stages[-1]):
        listing = base64.b64decode(stages[-1]["stdout_b64"]).decode("utf-8", "replace")
        stages[-1] = {**stages[-1], "stdout_b64": ""}  # ours to read, not compiler output for the job
        source_of = {obj: os.path.basename(src) for src, obj in zip(sources, objects)}
        units = {source_of.get(path, path): unit for path, unit in parse_readelf(listing).items()}
        libraries = library_exports([*SYSTEM_LIBRARIES, *(f"lib{f[2:]}.so" for f in link_flags
                                                           if f.startswith("-l"))])
        unread = [name for name in source_of.values() if name not in units]
        localise, refused = private_symbols(units, private, libraries) if not unread else ([], [])
        message = (f"{private[0]}: error: the symbols of {', '.join(unread)} could not be read\n" if unread
                   else f"{private[0]}: error: the completion defines {', '.join(refused[:5])}, which the tests "
                   "take from the system libraries (interposing a library function is refused)\n" if refused else "")
        if message:  # never link what could not be checked
            stages.append({**stages[-1], "exit_code": 1, "stdout_b64": "",
                           "stderr_b64": base64.b64encode(message.encode()).decode(), "cpu_s": 0.0, "wall_s": 0.0})
        elif localise:
            listed = _write_list(localise)
            for source, obj in zip(sources, objects):
                if os.path.basename(source) in private and _ok(stages[-1]):
                    stages.append(execute([_find("objcopy"), f"--localize-symbols={listed}", obj, obj], limits))
    if _ok(stages[-1]):
        stages.append(execute([gxx, *flags, "-o", prog, *objects, *link_flags,
                               *fast_linker_flags([*compile_flags, *link_flags])], limits))
    return _merge_stages(stages)


# What a sanitized program may neither define nor import (sandbox/sanitizer.py): the runtimes' callbacks and
# hooks that run between a finding and the exit status (`__asan_on_error` calling _exit(0) turns every finding
# into a clean exit), the ones that move or silence the report, and the dynamic-linker calls that would reach
# any of them by name at run time. Honest code uses none of them.
SANITIZER_HOOKS = frozenset({
    "__asan_on_error", "__asan_set_death_callback", "__asan_set_error_report_callback", "__asan_default_options",
    "__asan_default_suppressions", "__asan_set_error_exit_code", "__asan_poison_memory_region",
    "__asan_unpoison_memory_region", "__ubsan_default_options", "__ubsan_on_report", "__lsan_default_options",
    "__sanitizer_set_death_callback", "__sanitizer_set_report_path", "__sanitizer_set_report_fd",
    "__sanitizer_report_error_summary", "__sanitizer_install_malloc_and_free_hooks", "__sanitizer_on_print",
    "__sanitizer_sandbox_on_notify", "__sanitizer_acquire_crash_state",
    "dlsym", "dlvsym", "dlopen", "dlmopen", "dl_iterate_phdr", "_r_debug", "_dl_find_object",
})


def sanitizer_hooks_in(listing: str) -> list[str]:
    """SANITIZER_HOOKS named in `readelf -s -W` output (defined or imported, any symbol table or version)."""
    names = set()
    for line in listing.splitlines():
        parts = line.split()
        if len(parts) >= 8 and parts[0].endswith(":") and parts[0][:-1].isdigit():
            names.add(parts[7].split("@")[0])
    return sorted(names & SANITIZER_HOOKS)


def check_sanitized_binary(prog: str, limits: dict) -> dict:
    """The readelf stage of a sanitized build: fails (with the reason on stderr) when the binary names a hook."""
    stage = execute([_find("readelf"), "-s", "-W", prog], limits)
    listing = base64.b64decode(stage["stdout_b64"]).decode("utf-8", "replace")
    stage = {**stage, "stdout_b64": ""}  # ours to read, not compiler output for the job
    if not _ok(stage):
        return stage
    hooks = sanitizer_hooks_in(listing)
    if not hooks:
        return stage
    message = (f"error: the program names {', '.join(hooks[:5])}: sanitizer callbacks and hooks, and dynamic "
               "symbol lookup, are refused in sanitized jobs\n")
    return {**stage, "exit_code": 1, "stderr_b64": base64.b64encode(message.encode()).decode()}


def run_job(req: dict) -> dict:
    reply: dict = {"id": req.get("id"), "compile": None, "binary_b64": None, "runs": []}
    prog = os.path.join(WORK_DIR, "prog")
    if req.get("binary_b64"):
        binary = base64.b64decode(req["binary_b64"])
    else:
        src_dir = os.path.join(WORK_DIR, "src")
        sources = _write_sources(src_dir, req["files"])
        compile_flags, link_flags = split_flags(list(req["flags"]))
        pch_dir = os.path.join(PCH_ROOT, pch_key(compile_flags))
        include_pch = ["-I", pch_dir] if os.path.isdir(pch_dir) else []
        if req.get("private_units"):
            result = build_with_private_units(sources, list(req["private_units"]), compile_flags, link_flags,
                                              include_pch, req["compile_limits"], prog)
        else:
            argv = [_find("g++"), *include_pch, *compile_flags, "-I", src_dir, "-o", prog, *sources, *link_flags,
                    *fast_linker_flags(list(req["flags"]))]
            result = execute(argv, req["compile_limits"])
        if req.get("sanitizer_env") is not None and _ok(result):
            result = _merge_stages([result, check_sanitized_binary(prog, req["compile_limits"])])
        reply["compile"] = result
        reply["compile"]["used_pch"] = bool(include_pch)
        ok = result["exit_code"] == 0 and result["killed_for"] is None
        binary = b""
        if ok:  # read before any untrusted code has run; never through a link the job's uid could have made
            try:
                with os.fdopen(os.open(prog, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK), "rb") as f:
                    ok = stat.S_ISREG(os.fstat(f.fileno()).st_mode)
                    binary = f.read() if ok else b""
            except OSError:
                ok = False
        # Sources (tests included), and whatever the compiler left in /tmp, must never be visible to the
        # program at run time: the run stage starts from empty scratch and our copy of the binary.
        reply["compile"]["clean"] = wipe_scratch()
        if not ok:
            return reply
        if req.get("return_binary") and len(binary) <= int(req.get("max_binary_bytes", 64 << 20)):
            reply["binary_b64"] = base64.b64encode(binary).decode()
    sanitizer_env = req.get("sanitizer_env")
    run_limits = {**req["run_limits"], "address_space": sanitizer_env is None}
    for i, run in enumerate(req["runs"]):
        if i:  # each test starts from the same state
            wipe_scratch()
        try:
            installed = _install_binary(binary)
        except OSError as exc:  # an earlier test of this job filled /work beyond what cleanup could undo
            reply["runs"].append(_not_started(exc.errno or errno.ENOSPC))
            if req.get("stop_on_failure"):
                break
            continue
        stdin = base64.b64decode(run.get("stdin_b64", ""))
        outcome = execute([installed, *run.get("args", [])], run_limits, stdin, sanitizer_env)
        reply["runs"].append(outcome)
        if req.get("stop_on_failure") and (outcome["exit_code"] != 0 or outcome["killed_for"]):
            break
    return reply


def serve() -> int:
    if os.getpid() != 1:  # kill(-1) would hit the caller's whole session outside a PID namespace
        print("runner: refusing to serve outside a PID namespace (must be PID 1)", file=sys.stderr)
        return 2
    _LIBC.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_DFL)  # no handlers: init ignores what it does not handle
    os.umask(0o022)  # the job's uid reads the sources we write
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    for line in inp:
        try:
            req = json.loads(line)
            if req.get("op") == "ping":
                if "job_uid" in req:
                    configure(req["job_uid"], req.get("seccomp_b64"),
                              req.get("wipe_timeout_s", WIPE_TIMEOUT_S), req.get("job_cgroup_procs"))
                    check_identity()
                reply = {"ok": True, "uid": os.getuid(), "job_uid": JobIdentity.uid,
                         "seccomp": JobIdentity.seccomp is not None, "clean": scratch_is_clean()}
            else:
                kill_all_others()
                wipe_scratch()
                reply = run_job(req)
                # The job's verdict stands whatever cleanup finds; an unclean jail only retires the worker.
                kill_all_others()
                reply["clean"] = wipe_scratch()
        except Exception as exc:  # noqa: BLE001 - any failure here is the sandbox's, not the job's
            reply = {"id": None, "runner_error": f"{type(exc).__name__}: {exc}"}
        out.write(json.dumps(reply).encode() + b"\n")
        out.flush()
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["serve"]:
        return serve()
    if argv[:1] == ["build-pch"] and len(argv) >= 2:
        print(build_pch(argv[1], argv[2:]))
        return 0
    print("usage: runner.py serve | build-pch DIR FLAGS...", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
