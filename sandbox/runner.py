"""The job runner that lives inside a sandbox jail (Docker container or bubblewrap), as its PID 1.

Standard library only: it runs under the jail's own `python3`, not the project's venv.

Protocol: one JSON object per line on stdin (a request), one JSON object per line on stdout (the reply).
Only this process holds stdin/stdout; every job process gets a fresh stdin (a memfd), pipes for
stdout/stderr and nothing else.

Why PID 1: inside its PID namespace the init process cannot be killed by a signal it has no handler for,
so `kill(-1, SIGKILL)` from a job (or from us) ends every other process and never the runner. After each
stage we sweep with `kill(-1, SIGKILL)`, which is how orphaned daemons and escaped process groups die.
The runner makes itself non-dumpable, so a job running as the same uid can neither ptrace it nor open
`/proc/1/fd/*` or `/proc/1/mem` to forge a reply.

Per stage limits are rlimits set in the forked child before exec (CPU, address space, stack, file size,
processes, open files, no core dumps) plus a wall-clock deadline and an output-byte cap enforced here.
The jail adds what rlimits cannot (network, file system view, cgroup memory/pids for Docker).
"""

from __future__ import annotations

import base64
import ctypes
import errno
import hashlib
import json
import os
import resource
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import time

WORK_DIR = "/work"
SCRATCH_DIRS = ("/work", "/tmp", "/dev/shm")
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
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    resource.setrlimit(resource.RLIMIT_STACK, (mem, mem))
    fsize = int(limits["max_file_mb"]) << 20
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    # NPROC counts every process of this uid, the runner (and bwrap's monitor) included.
    nproc = int(limits["max_processes"]) + 2
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


def _spawn(argv: list[str], limits: dict, stdin_fd: int, out_w: int, err_w: int, report_w: int) -> int:
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
        os.execve(argv[0], argv, JOB_ENV)
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
    while True:
        try:
            pid, status, usage = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        if reaped is not None:
            reaped[pid] = (status, usage)


def execute(argv: list[str], limits: dict, stdin: bytes = b"") -> dict:
    """Run one process under `limits`; returns its raw outcome (the host turns it into a verdict)."""
    stdin_fd = os.memfd_create("stdin")
    os.write(stdin_fd, stdin)
    os.lseek(stdin_fd, 0, os.SEEK_SET)
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    report_r, report_w = os.pipe2(os.O_CLOEXEC)
    start = time.monotonic()
    pid = _spawn(argv, limits, stdin_fd, out_w, err_w, report_w)
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
    while not exited and killed_for is None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            killed_for = "wall_limit"
            break
        for key, _ in sel.select(remaining):
            if key.fd == pidfd:
                exited = True
                continue
            total, closed = _read_some(key.fd, streams[key.fd], total, cap)
            if closed:
                sel.unregister(key.fd)
            if total > cap:
                killed_for = "output_limit"
    reaped: dict = {}
    if killed_for:
        kill_all_others(reaped)
    if pid in reaped:
        status, usage = reaped.pop(pid)
    else:
        _, status, usage = os.wait4(pid, 0)
    wall = time.monotonic() - start
    kill_all_others()  # daemons and stray children die with the stage
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
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 4),
        "wall_s": round(wall, 4),
        "memory_mb": round(usage.ru_maxrss / 1024, 2),
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


def _make_writable(func, path, _exc) -> None:
    try:
        os.chmod(os.path.dirname(path), stat.S_IRWXU)
        os.chmod(path, stat.S_IRWXU)
    except OSError:
        pass
    try:
        func(path)
    except OSError:
        pass


def wipe_scratch() -> None:
    """Empty every writable place so nothing persists to the next job."""
    for top in SCRATCH_DIRS:
        try:
            entries = os.listdir(top)
        except OSError:
            continue
        for name in entries:
            path = os.path.join(top, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, onerror=_make_writable)
            else:
                try:
                    os.unlink(path)
                except OSError:
                    pass
    if _sysv_ipc_in_use():
        subprocess.run(["ipcrm", "--all"], capture_output=True, env=JOB_ENV, check=False)


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
    return all(not os.path.exists(d) or not os.listdir(d) for d in SCRATCH_DIRS)


def _find(name: str) -> str:
    return shutil.which(name, path=JOB_ENV["PATH"]) or name


def _install_binary(prog: str, data: bytes) -> None:
    with open(prog, "wb") as f:
        f.write(data)
    os.chmod(prog, 0o755)


def run_job(req: dict) -> dict:
    reply: dict = {"id": req.get("id"), "compile": None, "binary_b64": None, "runs": []}
    prog = os.path.join(WORK_DIR, "prog")
    if req.get("binary_b64"):
        binary = base64.b64decode(req["binary_b64"])
        _install_binary(prog, binary)
    else:
        src_dir = os.path.join(WORK_DIR, "src")
        os.makedirs(src_dir)
        sources = []
        for name, text in req["files"].items():
            path = os.path.join(src_dir, name)
            with open(path, "w", encoding="utf-8", errors="surrogateescape") as f:
                f.write(text)
            if name.endswith(SOURCE_SUFFIXES):
                sources.append(path)
        compile_flags, link_flags = split_flags(list(req["flags"]))
        pch_dir = os.path.join(PCH_ROOT, pch_key(compile_flags))
        include_pch = ["-I", pch_dir] if os.path.isdir(pch_dir) else []
        argv = [_find("g++"), *include_pch, *compile_flags, "-I", src_dir, "-o", prog, *sources, *link_flags,
                *fast_linker_flags(list(req["flags"]))]
        reply["compile"] = result = execute(argv, req["compile_limits"])
        reply["compile"]["used_pch"] = bool(include_pch)
        # Sources (tests included) must never be visible to the program at run time.
        shutil.rmtree(src_dir, onerror=_make_writable)
        ok = result["exit_code"] == 0 and result["killed_for"] is None and os.path.isfile(prog)
        if not ok:
            return reply
        with open(prog, "rb") as f:  # read before any untrusted code has run
            binary = f.read()
        if req.get("return_binary") and len(binary) <= int(req.get("max_binary_bytes", 64 << 20)):
            reply["binary_b64"] = base64.b64encode(binary).decode()
    for i, run in enumerate(req["runs"]):
        if i:  # each test starts from the same state; the binary comes from our copy, not the file a
            wipe_scratch()  # previous run could have replaced
            _install_binary(prog, binary)
        stdin = base64.b64decode(run.get("stdin_b64", ""))
        outcome = execute([prog, *run.get("args", [])], req["run_limits"], stdin)
        reply["runs"].append(outcome)
        if req.get("stop_on_failure") and (outcome["exit_code"] != 0 or outcome["killed_for"]):
            break
    return reply


def serve() -> int:
    if os.getpid() != 1:  # kill(-1) would hit the caller's whole session outside a PID namespace
        print("runner: refusing to serve outside a PID namespace (must be PID 1)", file=sys.stderr)
        return 2
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_DFL)  # no handlers: init ignores what it does not handle
    os.umask(0o077)
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    for line in inp:
        try:
            req = json.loads(line)
            if req.get("op") == "ping":
                reply = {"ok": True, "uid": os.getuid(), "clean": scratch_is_clean()}
            else:
                kill_all_others()
                wipe_scratch()
                reply = run_job(req)
                kill_all_others()
                wipe_scratch()
                reply["clean"] = scratch_is_clean()
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
