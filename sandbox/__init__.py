"""Crucible's C++ execution sandbox: compile and run untrusted programs with g++ in Docker or bubblewrap.

What is isolated (both backends): the program runs in its own PID, network, IPC, UTS and mount
namespaces as an unprivileged uid with no capabilities, sees a read-only system and size-capped scratch
tmpfs only, cannot reach any network (not even the host's loopback), cannot see host files, environment
or the Docker socket, and is bounded per process by rlimits (CPU, address space, stack, file size,
processes, open files) and per stage by a wall clock and an output cap. Everything it started is killed
after each stage and every writable place is wiped before the next job. The runner that judges it is
PID 1 of the jail (unkillable from inside), non-dumpable (no ptrace or /proc access to it), and the
expected outputs never enter the jail. Docker adds cgroup memory/pids/CPU limits and a seccomp profile.

What is not isolated: CPU caches and timing side channels; the kernel itself (a kernel exploit escapes
any namespace jail: use gVisor/Kata via Docker's runtime setting for stronger guarantees); under bwrap
the jail's total memory is bounded only by RLIMIT_AS x RLIMIT_NPROC (no cgroup).

Use:
    from sandbox import Job, TestCase, SandboxConfig, SandboxPool
    with SandboxPool(SandboxConfig(backend="docker")) as pool:
        results = pool.run_batch([Job({"main.cpp": src}, tests=(TestCase(b"1 2", "3"),))])
"""

from sandbox.types import DEFAULT_COMPILE_LIMITS, DEFAULT_RUN_LIMITS, ExecResult, Job, Result, StageLimits, TestCase, Verdict


def __getattr__(name: str):
    # Keep `import sandbox` light (no docker client) until a pool is actually needed.
    if name == "SandboxPool":
        from sandbox.pool import SandboxPool

        return SandboxPool
    if name == "SandboxConfig":
        from sandbox.config import SandboxConfig

        return SandboxConfig
    raise AttributeError(name)


__all__ = [
    "DEFAULT_COMPILE_LIMITS", "DEFAULT_RUN_LIMITS", "ExecResult", "Job", "Result", "SandboxConfig",
    "SandboxPool", "StageLimits", "TestCase", "Verdict",
]
