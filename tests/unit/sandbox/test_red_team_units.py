"""Pure parts of the sandbox's red-team fixes (issue 13): flag allowlist, verdict and cache rules, the
scratch wipe (run here on a host directory), the seccomp filter's shape and the reply budget."""

from __future__ import annotations

import json
import re
import os
import time

import pytest

from rewards.tasks import load_tasks
from rewards.types import Task
from sandbox.config import LimitsConfig, SandboxConfig
from sandbox.flags import check_flags, flag_problem
from sandbox.judge import classify_run, compile_is_deterministic
from sandbox.runner import wipe_dir
from sandbox.types import Job, StageLimits, TestCase, Verdict

REFUSED = ["-wrapper", "gdb,--args", "-fplugin=/tmp/p.so", "-fplugin-arg-x-y=1", "-B/tmp", "-B", "-specs=/tmp/s",
           "@/etc/flags", "-save-temps", "-save-temps=obj", "-I/etc", "-I", "-include", "-imacros", "-isystem/x",
           "-iquote/x", "--sysroot=/", "-L/tmp", "-Wl,-plugin,/tmp/p.so", "-Wl,--wrap=main", "-Xlinker",
           "-Wa,-adhln=/work/x", "-Wp,-include,/etc/passwd", "-fdump-tree-all", "-fprofile-generate=/work",
           "-fdiagnostics-format=sarif-file", "-fstack-usage", "-fcallgraph-info", "-o", "-E", "-S", "-x",
           "-fdebug-prefix-map=/a=/b", "--param", "-v", "-fsanitize=address,undefined", "-fno-sanitize-recover"]
ALLOWED = ["-std=c++17", "-std=gnu++20", "-O2", "-Ofast", "-g", "-Wall", "-Wextra", "-Wno-unused-result",
           "-Werror=format", "-pedantic", "-pthread", "-fopenmp",
           "-fno-exceptions", "-march=native", "-mavx2", "-DONLINE_JUDGE", "-DN=100", "-UNDEBUG", "-lm",
           "-lcrypto", "-lboost_system", "-static", "-c", "-fuse-ld=gold", "-Wl,--as-needed",
           "--param=max-inline-insns-single=500", "-fconstexpr-loop-limit=1000000"]


@pytest.mark.parametrize("flag", REFUSED)
def test_flags_that_run_code_read_files_or_leave_sources_are_refused(flag):
    assert flag_problem(flag) is not None
    with pytest.raises(ValueError, match=r"field 'Job.flags'.*" + re.escape(repr(flag))):
        Job({"a.cpp": "int main(){}"}, flags=("-O2", flag))


@pytest.mark.parametrize("flag", ALLOWED)
def test_flags_judges_use_are_allowed(flag):
    assert flag_problem(flag) is None


def test_flags_must_be_a_list_of_strings():
    with pytest.raises(ValueError, match="expected a list"):
        check_flags("-O2 -wrapper x")
    with pytest.raises(ValueError, match="must be strings"):
        check_flags([3])


def test_task_with_a_bad_flag_names_the_file_line_task_and_field(tmp_path):
    path = tmp_path / "tasks.jsonl"
    good = {"task_id": "ok", "prompt": "int f() {", "tests": "int main(){ assert(f() == 1); }"}
    bad = {**good, "task_id": "evil", "link_flags": ["-Wl,-plugin,/tmp/x.so"]}
    path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(ValueError) as info:
        load_tasks(path)
    message = str(info.value)
    assert f"{path}:2" in message and "task evil" in message and "'link_flags'" in message
    assert "-Wl,-plugin,/tmp/x.so" in message
    with pytest.raises(ValueError, match="task t: field 'flags'"):
        Task(task_id="t", kind="compile", prompt="", flags=("-O2", "-save-temps"))


def test_cpu_over_the_limit_is_time_limit_even_on_a_clean_exit():
    limits = StageLimits(cpu_s=1)
    clean = {"exit_code": 0, "signal": None, "killed_for": None, "exec_errno": None, "memory_mb": 1.0}
    assert classify_run({**clean, "cpu_s": 3.2}, limits)[0] is Verdict.TIME_LIMIT
    assert classify_run({**clean, "cpu_s": 0.99}, limits)[0] is Verdict.OK


@pytest.mark.parametrize("outcome, cacheable", [
    ({"exit_code": 0, "killed_for": None, "signal": None, "cpu_s": 9.0, "wall_s": 9.0}, True),
    ({"exit_code": 1, "killed_for": None, "signal": None, "cpu_s": 0.3, "wall_s": 0.4}, True),
    ({"exit_code": None, "killed_for": "wall_limit", "signal": 9, "cpu_s": 0.1, "wall_s": 10.0}, False),
    ({"exit_code": 1, "killed_for": None, "signal": None, "cpu_s": 6.0, "wall_s": 6.5}, False),  # near limit
    ({"exit_code": 1, "killed_for": None, "signal": None, "cpu_s": 0.2, "wall_s": 5.5}, False),  # slow: load
    ({"exit_code": None, "killed_for": None, "signal": 9, "cpu_s": 0.2, "wall_s": 0.3}, False),
])
def test_only_compile_outcomes_the_program_decides_are_cached(outcome, cacheable):
    assert compile_is_deterministic(outcome, StageLimits(cpu_s=10, wall_s=10)) is cacheable


def _tree(root) -> None:
    """What a hostile program can leave in scratch: mode-000 dirs, a tree deeper than PATH_MAX, links out."""
    outside = root / "outside"
    outside.mkdir()
    (outside / "keep").write_text("keep")
    top = root / "scratch"
    top.mkdir()
    locked = top / "locked" / "inner"
    locked.mkdir(parents=True)
    (locked / "f").write_text("x")
    os.chmod(locked, 0)
    os.chmod(locked.parent, 0)
    fd = os.open(top, os.O_RDONLY)
    try:
        for _ in range(1500):  # 1500 x 40 characters: 60,000 > PATH_MAX
            os.mkdir("d" * 39, 0o755, dir_fd=fd)
            nxt = os.open("d" * 39, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = nxt
        os.mkdir("last", 0, dir_fd=fd)
    finally:
        os.close(fd)
    os.symlink(outside, top / "link_out")
    os.symlink("loop", top / "loop")
    os.mkfifo(top / "fifo")


def test_wipe_removes_any_tree_and_follows_no_link(tmp_path):
    _tree(tmp_path)
    assert wipe_dir(str(tmp_path / "scratch"), time.monotonic() + 30)
    assert os.listdir(tmp_path / "scratch") == []
    assert (tmp_path / "outside" / "keep").read_text() == "keep"


def test_wipe_stops_at_its_deadline(tmp_path):
    _tree(tmp_path)
    assert not wipe_dir(str(tmp_path / "scratch"), time.monotonic() - 1)
    assert wipe_dir(str(tmp_path / "scratch"), time.monotonic() + 30)


def test_seccomp_filter_is_whole_bpf_instructions():
    from sandbox.seccomp import program_filter_bpf

    bpf = program_filter_bpf()
    assert len(bpf) % 8 == 0 and len(bpf) // 8 > 40


def test_stack_limit_is_its_own_field_with_a_thread_friendly_default():
    assert StageLimits().stack_mb == 64
    assert LimitsConfig.of(StageLimits(stack_mb=16)).to_limits().stack_mb == 16


def test_reply_budget_covers_every_cleanup():
    from sandbox.pool import SandboxPool

    pool = SandboxPool(SandboxConfig(wipe_timeout_s=2.0, reply_margin_s=10.0))
    job = Job({"a.cpp": "int main(){}"}, tests=(TestCase(), TestCase()), run_limits=StageLimits(wall_s=3),
              compile_limits=StageLimits(wall_s=20))
    # 2 runs x 3 s + compile 20 s + (3 stages + 2) cleanups x (2 s + the runner's own 1 s) + margin 10 s
    assert pool.reply_budget(job, compile=True) == 6 + 20 + 5 * 3.0 + 10
    assert pool.reply_budget(job, compile=False) == 6 + 4 * 3.0 + 10


def test_cache_dir_is_trusted_only_when_safe(tmp_path):
    from sandbox.hostfiles import trusted_dir
    from sandbox.worker import WorkerError

    real = tmp_path / "real"
    assert trusted_dir(real) == real and (os.stat(real).st_mode & 0o777) == 0o755
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(WorkerError, match="not a directory"):
        trusted_dir(tmp_path / "link")
    os.chmod(real, 0o777)
    with pytest.raises(WorkerError, match="writable by group or others"):
        trusted_dir(real)
    os.chmod(real, 0o755)
    os.chown(real, 12345, 12345)
    with pytest.raises(WorkerError, match="owned by uid 12345"):
        trusted_dir(real)


def test_host_files_are_written_atomically_and_links_are_never_followed(tmp_path):
    from sandbox.hostfiles import install_file, make_world_readable, runner_copy
    from sandbox.worker import RUNNER_PATH

    root = tmp_path / "cache"
    copy = runner_copy(root)
    assert copy.read_bytes() == RUNNER_PATH.read_bytes() and copy.parent == root
    assert [p.name for p in root.iterdir()] == [copy.name]  # no temporary left behind
    victim = tmp_path / "victim"
    victim.write_text("secret")
    os.chmod(victim, 0o600)
    (root / "sub").mkdir()
    (root / "sub" / "evil").symlink_to(victim)
    make_world_readable(root)
    assert (os.stat(victim).st_mode & 0o777) == 0o600  # the link's target kept its mode
    (root / "x.py").symlink_to(victim)
    install_file(root, "x.py", b"new")  # replaces the link, never writes through it
    assert victim.read_text() == "secret" and not (root / "x.py").is_symlink()
