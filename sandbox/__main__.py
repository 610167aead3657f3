"""Command line: `python -m sandbox run|doctor|demo|gc`. Every command's last stdout line is one JSON object.

    python -m sandbox run FILE.cpp [--stdin FILE] [--backend docker|bwrap] [--time-limit S] [--memory-mb N]

`run` exits 0 whenever the sandbox itself worked, whatever the verdict; non-zero only for infrastructure
failure (then the JSON's verdict is SANDBOX_ERROR and `error` says why).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path

from configs.loader import run_cli
from sandbox.image import DEFAULT_FLAGS
from sandbox.types import DEFAULT_RUN_LIMITS, Job, TestCase, Verdict

EXIT_INFRA = 3


def _emit(obj: dict) -> None:
    print(json.dumps(obj, ensure_ascii=True))


def cmd_run(args: argparse.Namespace) -> int:
    from sandbox.config import SandboxConfig
    from sandbox.pool import SandboxPool
    from sandbox.worker import WorkerError

    sources = [Path(f) for f in args.files]
    for path in sources:
        if not path.is_file():
            print(f"error: source file {path} does not exist", file=sys.stderr)
            return 2
    stdin = Path(args.stdin).read_bytes() if args.stdin else b""
    expected = Path(args.expected).read_text() if args.expected else None
    limits = replace(DEFAULT_RUN_LIMITS, cpu_s=args.time_limit, wall_s=max(args.time_limit * 2, args.time_limit + 1),
                     memory_mb=args.memory_mb)
    job = Job(
        files={p.name: p.read_text(encoding="utf-8", errors="surrogateescape") for p in sources},
        flags=tuple(args.flags.split()) if args.flags is not None else DEFAULT_FLAGS,
        tests=(TestCase(stdin=stdin, expected_stdout=expected, checker=args.checker),),
        run_limits=limits,
    )
    try:
        with SandboxPool(SandboxConfig(backend=args.backend, num_workers=1)) as pool:
            result = pool.run(job)
    except WorkerError as exc:
        _emit({"verdict": Verdict.SANDBOX_ERROR.value, "error": str(exc), "exit_code": None, "signal": None,
               "wall_s": 0.0, "cpu_s": 0.0, "memory_mb": 0.0, "stdout": "", "stderr": "",
               "compile_output": ""})
        return EXIT_INFRA
    out = result.to_json()
    if result.tests:
        sys.stderr.write(result.tests[0].stderr)
    _emit(out)
    return EXIT_INFRA if result.verdict is Verdict.SANDBOX_ERROR else 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from sandbox import doctor

    results = doctor.checks(args.image)
    for r in results:
        mark = "ok " if r["ok"] else "MISSING"
        print(f"[{mark}] {r['name']}: {r['detail']}" + (f"\n        fix: {r['fix']}" if r["fix"] else ""))
    ready = doctor.backends_ready(results)
    exposures = doctor.exposures(results)
    for backend, exposure in exposures.items():
        print(f"[note] {backend}: {exposure}")
    _emit({"backends_ready": ready, "missing": [r["name"] for r in results if not r["ok"]],
           "exposures": exposures})
    return 0 if any(ready.values()) else 1


DEMO_PROGRAMS = {
    "a+b (correct)": ("#include <bits/stdc++.h>\nint main(){long a,b;std::cin>>a>>b;std::cout<<a+b;}", b"2 40", "42"),
    "a+b (wrong)": ("#include <cstdio>\nint main(){int a,b;scanf(\"%d %d\",&a,&b);printf(\"%d\",a-b);}", b"2 40", "42"),
    "does not compile": ("int main(){ return x; }", b"", None),
    "infinite loop": ("int main(){ volatile int x=0; for(;;) x++; }", b"", None),
    "fork bomb": ("#include <unistd.h>\nint main(){ for(;;) fork(); }", b"", None),
    "heap bomb": ("#include <cstring>\n#include <cstdlib>\nint main(){ for(;;){ char*p=(char*)malloc(1<<24);"
                  " if(!p) return 1; memset(p,1,1<<24);} }", b"", None),
    "reads host secrets": ("#include <fstream>\n#include <iostream>\nint main(){ std::ifstream f(\"/etc/shadow\");"
                           " std::cout << (f ? \"READ\" : \"denied\"); }", b"", "denied"),
}


def cmd_demo(args: argparse.Namespace) -> int:
    from sandbox import doctor
    from sandbox.config import SandboxConfig
    from sandbox.pool import SandboxPool

    ready = doctor.backends_ready(doctor.checks())
    backends = [b for b in ("docker", "bwrap") if ready[b]]
    if not backends:
        print("no sandbox backend is ready: run `python -m sandbox doctor`", file=sys.stderr)
        return 1
    jobs = [Job({"main.cpp": src}, tests=(TestCase(stdin, exp),),
                run_limits=replace(DEFAULT_RUN_LIMITS, cpu_s=1, wall_s=2, memory_mb=256))
            for src, stdin, exp in DEMO_PROGRAMS.values()]
    summary: dict = {"backends": {}}
    for backend in backends:
        start = time.monotonic()
        with SandboxPool(SandboxConfig(backend=backend)) as pool:
            results = pool.run_batch(jobs, progress=True)
        print(f"\n== backend: {backend} ({time.monotonic() - start:.1f}s)")
        for name, res in zip(DEMO_PROGRAMS, results):
            print(f"  {name:<20} {res.verdict.value}")
        summary["backends"][backend] = {n: r.verdict.value for n, r in zip(DEMO_PROGRAMS, results)}
    _emit(summary)
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    """Orphans only (containers whose creating process is gone): a pool running elsewhere on this machine
    keeps its workers. `--all` removes every sandbox container, live pools' included."""
    from sandbox.docker_backend import reap_orphans, remove_containers

    if args.all:
        _emit({"removed_containers": remove_containers(), "scope": "all"})
    else:
        _emit({"removed_containers": len(reap_orphans()), "scope": "orphans"})
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="compile and run one C++ program")
    run.add_argument("files", nargs="+", metavar="FILE.cpp")
    run.add_argument("--stdin", help="file fed to the program's standard input")
    run.add_argument("--expected", help="expected stdout (verdict WRONG_ANSWER when it differs)")
    run.add_argument("--checker", default="tokens", choices=["exact", "tokens", "float"])
    run.add_argument("--backend", default="docker", choices=["docker", "bwrap"])
    run.add_argument("--time-limit", type=float, default=DEFAULT_RUN_LIMITS.cpu_s, help="CPU seconds")
    run.add_argument("--memory-mb", type=int, default=DEFAULT_RUN_LIMITS.memory_mb)
    run.add_argument("--flags", help=f"compiler flags (default: {' '.join(DEFAULT_FLAGS)})")
    run.set_defaults(func=cmd_run)
    doc = sub.add_parser("doctor", help="check what each backend needs")
    doc.add_argument("--image", default=__import__("sandbox.image").image.DEFAULT_IMAGE)
    doc.set_defaults(func=cmd_doctor)
    sub.add_parser("demo", help="run a few honest and hostile programs").set_defaults(func=cmd_demo)
    gc = sub.add_parser("gc", help="remove sandbox containers whose owning process is gone")
    gc.add_argument("--all", action="store_true", help="also remove containers of pools still running")
    gc.set_defaults(func=cmd_gc)
    args = parser.parse_args(argv)
    if args.command == "run" and (args.time_limit <= 0 or args.memory_mb <= 0):
        parser.error("--time-limit and --memory-mb must be > 0")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(run_cli(main))
