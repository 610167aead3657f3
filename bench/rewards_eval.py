"""Evaluation throughput on HumanEval-X canonical solutions: `python -m rewards eval`'s path (two
translation units, tamper-proof harness, isolation) vs the naive official harness (one file
`prompt + completion + test`, plain g++ then run, no isolation), same parallelism, same run.

    .venv/bin/python bench/rewards_eval.py [--backends docker bwrap] [--samples-per-task 1]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from sandbox_throughput import DATA, naive, save_report  # noqa: E402

from rewards.scorer import Scorer, canonical_items  # noqa: E402
from rewards.tasks import load_tasks  # noqa: E402
from sandbox.config import SandboxConfig  # noqa: E402
from sandbox.pool import SandboxPool  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", nargs="+", default=["docker", "bwrap"])
    parser.add_argument("--samples-per-task", type=int, default=1, help="identical samples per task (GRPO-like)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", default="bench/results/rewards_eval.json")
    args = parser.parse_args()
    tasks = load_tasks(DATA)
    items = [item for item in canonical_items(tasks) for _ in range(args.samples_per_task)]
    sources = [t.prompt + c + "\n" + t.tests for t, c in items]
    naive_s, naive_ok = naive(sources, args.workers)
    report = {"samples": len(items), "workers": args.workers, "naive_s": round(naive_s, 2),
              "naive_passed": sum(naive_ok)}
    for backend in args.backends:
        with SandboxPool(SandboxConfig(backend=backend, num_workers=args.workers)) as pool:
            start = time.monotonic()
            scored = Scorer(pool).score(items, progress=True)
            sec = time.monotonic() - start
        report[backend] = {"seconds": round(sec, 2), "passed": sum(s.passed for s in scored),
                           "samples_per_s": round(len(items) / sec, 2), "speedup_vs_naive": round(naive_s / sec, 2)}
        print(f"{backend}: {report[backend]}", file=sys.stderr)
    save_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
