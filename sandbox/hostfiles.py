"""Host-side files the jails read (the runner script, the bubblewrap PCH): trusted only when safe.

The cache directory is used only if it is a real directory (not a symlink) owned by us and writable by no
one else; otherwise another local user could swap the runner every jail executes. Files are written under
unpredictable names and renamed into place, and permissions are fixed without following links. Both
backends mount a copy from here, never the live checkout (editing or checking out another branch while a
pool runs must not change the runner of jails started later).
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from pathlib import Path

from sandbox.worker import RUNNER_PATH, WorkerError


def default_cache_dir() -> Path:
    return Path("/var/cache/crucible") if os.geteuid() == 0 else Path.home() / ".cache" / "crucible"


def trusted_dir(path: Path) -> Path:
    """Create `path` (0755) if needed; raise WorkerError unless it is a directory we own that no one else
    can write to."""
    path = Path(path)
    path.mkdir(mode=0o755, parents=True, exist_ok=True)
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise WorkerError(f"sandbox cache {path}: not a directory (a symlink?); refusing to use it")
    if st.st_uid != os.geteuid():
        raise WorkerError(f"sandbox cache {path}: owned by uid {st.st_uid}, not by us ({os.geteuid()})")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise WorkerError(f"sandbox cache {path}: writable by group or others (mode {st.st_mode & 0o777:o})")
    return path


def install_file(root: Path, name: str, data: bytes, mode: int = 0o644) -> Path:
    """`root/name` with exactly `data`, written atomically under an unpredictable temporary name."""
    target = trusted_dir(root) / name
    if target.is_file() and not target.is_symlink() and target.read_bytes() == data:
        return target
    fd, tmp = tempfile.mkstemp(dir=root, prefix=f".{name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def runner_copy(root: Path) -> Path:
    """A content-addressed copy of runner.py, world-readable, for the jails to mount read-only."""
    code = RUNNER_PATH.read_bytes()
    return install_file(root, f"runner-{hashlib.sha256(code).hexdigest()[:12]}.py", code)


def make_world_readable(root: Path) -> None:
    """0755 directories and 0644 files under `root`; links are neither followed nor changed."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in [*dirnames, *filenames]:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if stat.S_ISDIR(st.st_mode):
                os.chmod(path, 0o755)
            elif stat.S_ISREG(st.st_mode):
                os.chmod(path, 0o644)
    os.chmod(root, 0o755)
