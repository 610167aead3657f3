"""Check embedded task files with plain g++ (no sandbox): schema, references pass, `return {};` fails.

    .venv/bin/python rewards/data/validate_embedded.py rewards/data/embedded/tier0.yaml [...]
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

FLAGS = ["-std=c++17", "-O2", "-Wall", "-Wextra", "-Werror"]


def tokens_equal(a: str, b: str) -> bool:
    return a.split() == b.split()


def floats_equal(a: str, b: str, abs_tol: float, rel_tol: float) -> bool:
    x, y = a.split(), b.split()
    if len(x) != len(y):
        return False
    for p, q in zip(x, y):
        try:
            fp, fq = float(p), float(q)
        except ValueError:
            if p != q:
                return False
            continue
        if not (abs(fp - fq) <= abs_tol or abs(fp - fq) <= rel_tol * abs(fq)):
            return False
    return True


def build(tmp: Path, source: str, name: str, extra: list[str] = ()) -> tuple[bool, str]:
    src = tmp / f"{name}.cpp"
    src.write_text(source)
    proc = subprocess.run(["g++", *FLAGS, *extra, str(src), "-o", str(tmp / name)], capture_output=True, text=True)
    return proc.returncode == 0, proc.stderr[-2000:]


def check_task(task: dict, tmp: Path) -> str | None:
    tid = task.get("task_id", "?")
    for key in ("task_id", "tier", "kind", "prompt", "reference"):
        if key not in task:
            return f"{tid}: missing field {key}"
    kind, prompt, ref = task["kind"], task["prompt"], task["reference"]
    if kind == "function":
        if not prompt.rstrip().endswith("{") or "tests" not in task or "entry_point" not in task:
            return f"{tid}: function tasks need prompt ending with '{{', tests and entry_point"
        if task["tests"].count("assert") < 3:
            return f"{tid}: fewer than 3 asserts"
        ok, err = build(tmp, "#include <cassert>\n" + prompt + ref + "\n" + task["tests"], "right")
        if not ok:
            return f"{tid}: reference does not compile: {err}"
        if subprocess.run([str(tmp / "right")], capture_output=True, timeout=10).returncode != 0:
            return f"{tid}: reference fails its tests"
        ok, _ = build(tmp, "#include <cassert>\n" + prompt + "    return {};\n}\n" + task["tests"], "wrong",
                      ["-Wno-error"])
        if ok and subprocess.run([str(tmp / "wrong")], capture_output=True, timeout=10).returncode == 0:
            return f"{tid}: `return {{}};` passes the tests (not discriminative)"
    elif kind == "stdio":
        ok, err = build(tmp, prompt + ref, "io")
        if not ok:
            return f"{tid}: reference does not compile: {err}"
        for i, case in enumerate(task.get("cases") or []):
            out = subprocess.run([str(tmp / "io")], input=case["input"], capture_output=True, text=True, timeout=10)
            checker = task.get("checker", "tokens")
            good = (floats_equal(out.stdout, case["output"], task.get("abs_tol", 1e-6), task.get("rel_tol", 1e-6))
                    if checker == "float" else tokens_equal(out.stdout, case["output"]) if checker == "tokens"
                    else out.stdout.rstrip("\n") == case["output"].rstrip("\n"))
            if out.returncode != 0 or not good:
                return f"{tid}: case {i} fails: got {out.stdout!r}"
        if not task.get("cases"):
            return f"{tid}: no cases"
    elif kind == "compile":
        ok, err = build(tmp, prompt + ref, "obj", ["-c"])
        if not ok:
            return f"{tid}: does not compile: {err}"
    else:
        return f"{tid}: unknown kind {kind}"
    return None


def main(paths: list[str]) -> int:
    passed = failed = 0
    seen: set[str] = set()
    with tempfile.TemporaryDirectory() as d:
        for path in paths:
            for task in yaml.safe_load(Path(path).read_text()):
                problem = check_task(task, Path(d))
                if task.get("task_id") in seen:
                    problem = f"{task.get('task_id')}: duplicate task_id"
                seen.add(task.get("task_id"))
                if problem:
                    failed += 1
                    print(problem)
                else:
                    passed += 1
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
