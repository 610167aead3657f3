"""The syscall filter every jailed process (compiler and program, never the runner) starts under.

Built on the host with libseccomp (pyseccomp, a ctypes binding) and handed to the runner as raw BPF; the
runner installs it in the forked child after dropping to the job's uid and before exec (see runner._spawn),
on both backends. Docker's default profile also applies there; bubblewrap has no other filter. (Not bwrap's
`--seccomp`: that would filter the runner too, which needs setuid, and leave Docker jails without it.)

What it denies, and why (each has a test in tests/hostile or tests/integration/sandbox):
- kernel keyrings (`keyctl`, `add_key`, `request_key`): a uid's keyring outlives the job, a channel between
  jobs and a quota to exhaust;
- `bpf`, `perf_event_open`, `userfaultfd`, `io_uring_*`: large kernel attack surface no judged program needs;
- sockets of family AF_VSOCK (reaches the hypervisor) and AF_ALG (kernel crypto);
- new namespaces (`unshare`, `setns`, `clone` with CLONE_NEW*; `clone3` answers ENOSYS so libc falls back to
  `clone`, whose flags a filter can read): a user namespace would give the program mount rights over tmpfs;
- `mount`, `umount2`, `pivot_root`, `chroot`, `ptrace`, `process_vm_*`, `pidfd_getfd`, `kcmp`;
- memory that RLIMIT_AS does not count: SysV IPC (`shmget`, `semget`, `msgget`), POSIX message queues
  (`mq_open` and the `mq_*` calls on a queue opened through /dev/mqueue), `memfd_create`/`memfd_secret`;
- file locks (`flock`, fcntl F_*LK*): a lock on a shared read-only file (the host's /usr under bwrap) is a
  channel between concurrent jobs.
"""

from __future__ import annotations

import errno
import functools
import tempfile

_AF_ALG = 38
_AF_VSOCK = 40
_CLONE_NS_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000,
                   0x00000080)  # NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET, NEWTIME
_F_LOCK_CMDS = (5, 6, 7, 36, 37, 38)  # F_GETLK, F_SETLK, F_SETLKW, F_OFD_GETLK, F_OFD_SETLK, F_OFD_SETLKW
DENIED = ("keyctl", "add_key", "request_key", "bpf", "perf_event_open", "userfaultfd", "io_uring_setup",
          "io_uring_enter", "io_uring_register", "unshare", "setns", "mount", "umount2", "pivot_root",
          "chroot", "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "kcmp", "shmget",
          "semget", "msgget", "mq_open", "mq_timedsend", "mq_timedreceive", "mq_notify", "mq_getsetattr",
          "memfd_create", "memfd_secret", "flock", "fsopen", "fsmount", "open_tree", "move_mount",
          "name_to_handle_at", "open_by_handle_at")


@functools.lru_cache(maxsize=1)
def program_filter_bpf() -> bytes:
    """Raw BPF (an array of struct sock_filter) for the native architecture; other ABIs are killed."""
    import pyseccomp as sc

    f = sc.SyscallFilter(sc.ALLOW)
    eperm = sc.ERRNO(errno.EPERM)
    for name in DENIED:
        try:
            f.add_rule(eperm, name)
        except (OSError, ValueError):  # a syscall this libseccomp or architecture does not know
            pass
    f.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    for flag in _CLONE_NS_FLAGS:
        f.add_rule(eperm, "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    for family in (_AF_ALG, _AF_VSOCK):
        f.add_rule(sc.ERRNO(errno.EAFNOSUPPORT), "socket", sc.Arg(0, sc.EQ, family))
        f.add_rule(sc.ERRNO(errno.EAFNOSUPPORT), "socketpair", sc.Arg(0, sc.EQ, family))
    for cmd in _F_LOCK_CMDS:
        f.add_rule(eperm, "fcntl", sc.Arg(1, sc.EQ, cmd))
    with tempfile.TemporaryFile() as sink:  # libseccomp exports to a file descriptor
        f.export_bpf(sink)
        sink.seek(0)
        bpf = sink.read()
    if not bpf or len(bpf) % 8:
        raise RuntimeError(f"libseccomp exported {len(bpf)} bytes of BPF (not whole instructions)")
    return bpf


def available() -> str | None:
    """None when a filter can be built here, else why not (for `doctor`)."""
    try:
        program_filter_bpf()
    except Exception as exc:  # noqa: BLE001 - any failure means no filter
        return f"{type(exc).__name__}: {exc}"
    return None

