"""Evaluation throughput on HumanEval-X canonical solutions: `python -m rewards eval`'s path (raw
completions cut as HumanEval-X cuts them, two translation units, tamper-proof harness, isolation; with the
solution's unit linked as a private unit, and without) vs the
naive official harness (its own program `helpers + prompt + completion + test` and flags `-std=c++11`
[-lcrypto -lssl], plain g++ then run, no isolation), same parallelism, same run.

    .venv/bin/python bench/rewards_eval.py [--backends docker bwrap] [--samples-per-task 1]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from sandbox_throughput import DATA, naive, save_report  # noqa: E402

from rewards.agreement import read_rows  # noqa: E402
from rewards.official import humaneval_x_flags, humaneval_x_generation, humaneval_x_program  # noqa: E402
from rewards.scorer import Scorer  # noqa: E402
from rewards.tasks import humaneval_x  # noqa: E402
from sandbox.config import SandboxConfig  # noqa: E402
from sandbox.pool import SandboxPool  # noqa: E402


class SharedLinkScorer(Scorer):
    """The hardened path as it was before private units: the solution's globals serve the tests too
    (one `g++` for both units). Only for the side-by-side: it lets a completion interpose `memcmp`."""

    def prepare(self, task, completion):
        prep = super().prepare(task, completion)
        prep.job = replace(prep.job, private_units=())
        return prep


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", nargs="+", default=["docker", "bwrap"])
    parser.add_argument("--samples-per-task", type=int, default=1, help="identical samples per task (GRPO-like)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", default="bench/results/rewards_eval.json")
    args = parser.parse_args()
    rows = [row for row in read_rows(DATA) for _ in range(args.samples_per_task)]
    items = [(humaneval_x(row, row["task_id"]), row["canonical_solution"]) for row in rows]  # raw completions
    sources = [humaneval_x_program(row, humaneval_x_generation(row["canonical_solution"])) for row in rows]
    naive_s, naive_ok = naive(sources, args.workers, [humaneval_x_flags(row) for row in rows])
    report = {"samples": len(items), "workers": args.workers, "naive_s": round(naive_s, 2),
              "naive_passed": sum(naive_ok)}
    for backend in args.backends:
        for name, scorer_class in (("shared link", SharedLinkScorer), ("private units", Scorer)):
            with SandboxPool(SandboxConfig(backend=backend, num_workers=args.workers)) as pool:
                start = time.monotonic()
                scored = scorer_class(pool).score(items, progress=True)
                sec = time.monotonic() - start
            report[f"{backend}/{name}"] = {
                "seconds": round(sec, 2), "passed": sum(s.passed for s in scored),
                "samples_per_s": round(len(items) / sec, 2), "speedup_vs_naive": round(naive_s / sec, 2)}
            print(f"{backend}/{name}: {report[f'{backend}/{name}']}", file=sys.stderr)
    save_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
