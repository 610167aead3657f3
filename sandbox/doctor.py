"""`python -m sandbox doctor`: tell a new user what is missing for each backend and how to fix it."""

from __future__ import annotations

import os
import shutil
import subprocess

from sandbox.image import DEFAULT_IMAGE


def _run(argv: list[str], timeout: float = 20) -> tuple[bool, str]:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, str(exc)
    return proc.returncode == 0, (proc.stderr or proc.stdout).strip()


def checks(image: str = DEFAULT_IMAGE) -> list[dict]:
    """Each check: name, ok, detail, fix (a command or instruction)."""
    out = []

    def add(name: str, ok: bool, detail: str, fix: str) -> None:
        out.append({"name": name, "ok": ok, "detail": detail, "fix": "" if ok else fix})

    add("g++", shutil.which("g++") is not None, shutil.which("g++") or "not found", "apt-get install g++")
    docker_cli = shutil.which("docker")
    add("docker CLI", docker_cli is not None, docker_cli or "not found", "apt-get install docker.io")
    ok, detail = _run(["docker", "info", "--format", "{{.ServerVersion}}"]) if docker_cli else (False, "")
    add("docker daemon", ok, detail.splitlines()[-1] if detail else "no answer",
        "bash scripts/start_dockerd.sh   (or: systemctl start docker)")
    ok_img, _ = _run(["docker", "image", "inspect", image]) if ok else (False, "")
    add("sandbox image", ok_img, image if ok_img else f"{image} missing",
        "bash scripts/build_sandbox_image.sh   (offline: debootstrap + docker import; "
        "or docker build -t IMAGE -f sandbox/Dockerfile sandbox/)")
    bwrap = shutil.which("bwrap")
    add("bwrap", bwrap is not None, bwrap or "not found", "apt-get install bubblewrap")
    if bwrap:
        ok, detail = _run([bwrap, "--unshare-all", "--unshare-user", "--ro-bind", "/usr", "/usr",
                           "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
                           "--symlink", "usr/bin", "/bin", "--", "/bin/true"])
        add("bwrap user namespaces", ok, detail or "ok",
            "sysctl -w kernel.unprivileged_userns_clone=1 user.max_user_namespaces=15000")
        root = os.geteuid() == 0
        add("bwrap separate job uid", root,
            "root: jobs run as another uid than their runner" if root else
            "not root: job and runner share one uid (a program can lower its runner's limits)",
            "run the pool as root, or use the Docker backend")
        from sandbox.cgroup import available as cgroup_place

        place = cgroup_place()
        add("bwrap jail cgroup (memory+pids)", place is not None,
            f"jails get one under {place}" if place else "none writable here: see the note below",
            "run as root on a cgroup v1 host, or pass a delegated cgroup v2 directory as "
            "SandboxConfig.bwrap_cgroup_parent")
    from sandbox.seccomp import available as seccomp_problem

    problem = seccomp_problem()
    add("seccomp filter (libseccomp)", problem is None, problem or "built", "apt-get install libseccomp2")
    py = "/usr/bin/python3"
    add("jail python3 (bwrap)", os.access(py, os.X_OK), py, "apt-get install python3")
    boost = os.path.exists("/usr/include/boost/any.hpp")
    add("boost headers (bwrap)", boost, "boost/any.hpp", "apt-get install libboost-dev")
    ssl = os.path.exists("/usr/include/openssl/md5.h")
    add("openssl headers (bwrap)", ssl, "openssl/md5.h", "apt-get install libssl-dev")
    # Only sanitized jobs (Job.sanitize, reward.weights.sanitize) need them; g++'s own packages bring them on Debian.
    found = [_run(["g++", f"-print-file-name={lib}"])[1].strip() for lib in ("libasan.so", "libubsan.so")] \
        if shutil.which("g++") else []
    runtimes = bool(found) and all(os.path.isabs(path) for path in found)
    add("sanitizer runtimes (bwrap, sanitize only)", runtimes, ", ".join(found) or "no g++",
        "apt-get install libasan8 libubsan1   (the runtimes of your g++ version)")
    return out


def backends_ready(results: list[dict]) -> dict[str, bool]:
    ok = {r["name"]: r["ok"] for r in results}
    seccomp = ok.get("seccomp filter (libseccomp)", False)
    return {
        "docker": ok.get("docker daemon", False) and ok.get("sandbox image", False) and seccomp,
        "bwrap": ok.get("bwrap user namespaces", False) and ok.get("g++", False)
        and ok.get("jail python3 (bwrap)", False) and seccomp,
    }


def exposures(results: list[dict]) -> dict[str, str]:
    """What no check can fix on this host, per backend: printed by `doctor`, stated in docs/sandbox.md."""
    ok = {r["name"]: r["ok"] for r in results}
    out = {}
    if not ok.get("bwrap jail cgroup (memory+pids)", True):
        out["bwrap"] = ("no cgroup: a jail's memory outside RLIMIT_AS (tmpfs inodes, pipe and socket "
                        "buffers) is bounded only by rlimits, the seccomp filter, CPU/wall limits and the "
                        "cleanup deadline, and a sanitized run's memory (no RLIMIT_AS under ASan) only by the "
                        "sanitizer's RSS watchdog; use Docker where a worker's total memory must be capped")
    if not ok.get("bwrap separate job uid", True):
        out["bwrap-uid"] = ("job and runner share one uid: a program can lower its runner's limits and "
                            "priority")
    return out
