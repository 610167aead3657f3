"""The CLI contract other tools rely on: last stdout line is one JSON object; exit 0 unless infra failed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

REQUIRED = {"verdict", "exit_code", "signal", "wall_s", "cpu_s", "memory_mb", "stdout", "stderr", "compile_output"}


def cli(*args: str) -> tuple[int, dict, str]:
    proc = subprocess.run([sys.executable, "-m", "sandbox", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=300)
    last = proc.stdout.strip().splitlines()[-1]
    return proc.returncode, json.loads(last), proc.stderr


@pytest.mark.parametrize("src,stdin,verdict", [
    ("#include <iostream>\nint main(){int a,b;std::cin>>a>>b;std::cout<<a+b;}", "2 3", "OK"),
    ("int main(){ return 1 }", "", "COMPILE_ERROR"),
    ("int main(){ volatile int x=0; for(;;) x++; }", "", "TIME_LIMIT"),
])
def test_run_prints_one_json_line_and_exits_zero_for_any_verdict(backend, tmp_path: Path, src, stdin, verdict):
    (tmp_path / "prog.cpp").write_text(src)
    (tmp_path / "in.txt").write_text(stdin)
    code, out, _ = cli("run", str(tmp_path / "prog.cpp"), "--stdin", str(tmp_path / "in.txt"),
                       "--backend", backend, "--time-limit", "1", "--memory-mb", "128")
    assert code == 0 and out["verdict"] == verdict and REQUIRED <= out.keys()
    if verdict == "OK":
        assert out["stdout"] == "5"
    if verdict == "COMPILE_ERROR":
        assert "expected ';'" in out["compile_output"]


def test_run_reports_infrastructure_failure_with_nonzero_exit(tmp_path: Path):
    (tmp_path / "p.cpp").write_text("int main(){}")
    proc = subprocess.run([sys.executable, "-m", "sandbox", "run", str(tmp_path / "p.cpp")], capture_output=True,
                          text=True, cwd=REPO, env={"PATH": "/usr/bin:/bin", "DOCKER_HOST": "unix:///nonexistent.sock"},
                          timeout=120)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert proc.returncode != 0 and out["verdict"] == "SANDBOX_ERROR" and "doctor" in out["error"]


def test_run_rejects_missing_file_clearly(tmp_path: Path):
    proc = subprocess.run([sys.executable, "-m", "sandbox", "run", str(tmp_path / "nope.cpp")], capture_output=True,
                          text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 2 and "nope.cpp does not exist" in proc.stderr


def test_doctor_reports_backends():
    code, out, _ = cli("doctor")
    assert set(out["backends_ready"]) == {"docker", "bwrap"} and isinstance(out["missing"], list)
    assert code == (0 if any(out["backends_ready"].values()) else 1)
