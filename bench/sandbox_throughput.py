"""Sandbox throughput and isolation overhead vs a naive baseline, side by side in one run.

Baseline ("naive"): plain `g++` then run the binary, no isolation, same parallelism (one process per
core), same programs. Workloads:
  grpo       HumanEval-X C++ tasks x 8 completions each, the shape of a GRPO batch: the canonical
             solution, 2 exact duplicates of it, a wrong body (`return {};`) and a duplicate of that, a
             near-duplicate (same code, different comment), and 2 programs that start with
             `#include <bits/stdc++.h>` (one right, one wrong).
  canonical  the 164 distinct canonical programs (nothing to deduplicate; cold cache).
  overhead   median latency of a trivial cached binary run through the pool vs a direct subprocess run.

    .venv/bin/python bench/sandbox_throughput.py [--backends docker bwrap] [--num-tasks 164]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sandbox.config import SandboxConfig  # noqa: E402
from sandbox.image import DEFAULT_FLAGS  # noqa: E402
from sandbox.pool import SandboxPool  # noqa: E402
from sandbox.types import Job, TestCase, Verdict  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "humaneval-x" / "humaneval_cpp.jsonl.gz"
FLAGS = [*DEFAULT_FLAGS, "-lcrypto"]


def load_tasks(path: Path, limit: int) -> list[dict]:
    with gzip.open(path, "rt") as f:
        return [json.loads(line) for line in f][:limit]


def program(task: dict, body: str, bits: bool = False) -> str:
    head = "#include <bits/stdc++.h>\n" if bits else ""
    return head + task["prompt"] + body + "\n" + task["test"]


def grpo_batch(tasks: list[dict]) -> list[str]:
    out = []
    for t in tasks:
        right, wrong = t["canonical_solution"], "    return {};\n}\n"
        out += [program(t, right)] * 3
        out += [program(t, wrong)] * 2
        out.append(program(t, "    // another sample\n" + right))
        out += [program(t, right, bits=True), program(t, wrong, bits=True)]
    return out


def naive(sources: list[str], workers: int, flags: list[tuple[str, ...]] | None = None) -> tuple[float, list[bool]]:
    """Plain g++ then run, `workers` at a time, no isolation, no caching. `flags[i]` replaces the default
    flags (and -lcrypto) for source i, e.g. an official harness's own."""
    tmp = Path(tempfile.mkdtemp(prefix="naive-"))

    def one(i: int) -> bool:
        src, exe = tmp / f"p{i}.cpp", tmp / f"p{i}"
        src.write_text(sources[i])
        compile_flags, link = (flags[i], ()) if flags else (DEFAULT_FLAGS, ("-lcrypto",))
        compile_flags, link = [f for f in compile_flags if not f.startswith("-l")], \
            (*link, *(f for f in compile_flags if f.startswith("-l")))
        if subprocess.run(["g++", *compile_flags, str(src), "-o", str(exe), *link], capture_output=True).returncode:
            return False
        try:
            return subprocess.run([str(exe)], capture_output=True, timeout=10).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    start = time.monotonic()
    with ThreadPoolExecutor(workers) as ex:
        passed = list(ex.map(one, range(len(sources))))
    elapsed = time.monotonic() - start
    subprocess.run(["rm", "-rf", str(tmp)])
    return elapsed, passed


def sandboxed(sources: list[str], backend: str, workers: int) -> tuple[float, list[bool], dict]:
    jobs = [Job({"main.cpp": s}, flags=tuple(FLAGS), tests=(TestCase(),)) for s in sources]
    with SandboxPool(SandboxConfig(backend=backend, num_workers=workers)) as pool:
        start = time.monotonic()
        results = pool.run_batch(jobs, progress=True)
        elapsed = time.monotonic() - start
        stats = pool.stats.__dict__.copy()
    verdicts: dict[str, int] = {}
    for r in results:
        verdicts[r.verdict.value] = verdicts.get(r.verdict.value, 0) + 1
    stats["verdicts"] = verdicts
    return elapsed, [r.verdict is Verdict.OK for r in results], stats


def overhead(backend: str, runs: int) -> dict:
    src = "int main(){ return 0; }"
    tmp = Path(tempfile.mkdtemp(prefix="trivial-"))
    (tmp / "t.cpp").write_text(src)
    subprocess.run(["g++", *DEFAULT_FLAGS, str(tmp / "t.cpp"), "-o", str(tmp / "t")], check=True)
    direct = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([str(tmp / "t")], check=True)
        direct.append(time.perf_counter() - t0)
    job = Job({"main.cpp": src})
    pooled = []
    with SandboxPool(SandboxConfig(backend=backend, num_workers=1, dedupe=True)) as pool:
        pool.run(job)  # compile once; afterwards every run uses the cached binary
        for i in range(runs):
            # a distinct stdin defeats whole-job dedupe, so each call really runs in the jail
            t0 = time.perf_counter()
            result = pool.run(Job({"main.cpp": src}, tests=(TestCase(stdin=str(i).encode()),)))
            pooled.append(time.perf_counter() - t0)
            assert result.verdict is Verdict.OK
    subprocess.run(["rm", "-rf", str(tmp)])
    med_direct, med_pool = statistics.median(direct), statistics.median(pooled)
    return {"runs": runs, "direct_median_ms": round(med_direct * 1e3, 2),
            "sandbox_median_ms": round(med_pool * 1e3, 2),
            "overhead_median_ms": round((med_pool - med_direct) * 1e3, 2),
            "sandbox_p90_ms": round(sorted(pooled)[int(0.9 * runs)] * 1e3, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", nargs="+", default=["docker", "bwrap"])
    parser.add_argument("--num-tasks", type=int, default=164)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--overhead-runs", type=int, default=200)
    parser.add_argument("--workloads", nargs="+", default=["overhead", "canonical", "grpo"])
    parser.add_argument("--out", default="bench/results/sandbox.json")
    args = parser.parse_args()
    tasks = load_tasks(DATA, args.num_tasks)
    report: dict = {"workers": args.workers, "num_tasks": len(tasks), "machine": os.uname().machine,
                    "cores": os.cpu_count(), "results": {}}
    workloads = {"canonical": [program(t, t["canonical_solution"]) for t in tasks], "grpo": grpo_batch(tasks)}
    for name in args.workloads:
        if name == "overhead":
            for backend in args.backends:
                report["results"][f"overhead/{backend}"] = overhead(backend, args.overhead_runs)
                print(f"overhead {backend}: {report['results'][f'overhead/{backend}']}", file=sys.stderr)
            continue
        sources = workloads[name]
        base_s, base_ok = naive(sources, args.workers)
        entry = {"programs": len(sources), "naive_s": round(base_s, 2), "naive_passed": sum(base_ok)}
        for backend in args.backends:
            sec, ok, stats = sandboxed(sources, backend, args.workers)
            entry[backend] = {"seconds": round(sec, 2), "passed": sum(ok), "speedup_vs_naive": round(base_s / sec, 2),
                              "programs_per_s": round(len(sources) / sec, 2), "compiles": stats["compiles"],
                              "executed": stats["executed"], "verdicts": stats["verdicts"]}
        report["results"][name] = entry
        print(f"{name}: {json.dumps(entry)}", file=sys.stderr)
    save_report(report, args.out)
    return 0


def save_report(report: dict, out: str) -> None:
    """Raw results to `out` (bench/results/...) and the one-line JSON summary to stdout."""
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report))


if __name__ == "__main__":
    sys.exit(main())
