"""What `reward.sanitize` costs, and what it finds, on reference solutions: the embedded tasks' references and
the HumanEval-X canonical solutions (raw completions), scored without and with AddressSanitizer + UBSan by
the same Scorer on the same pool, one run. A reference that fails only when sanitized is listed with its
finding: undefined behaviour the plain tests cannot see (or a false alarm, to be read by a person).

    .venv/bin/python bench/sanitizer_cost.py [--backend docker] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from sandbox_throughput import DATA, save_report  # noqa: E402

from rewards.agreement import read_rows  # noqa: E402
from rewards.reward import RewardConfig  # noqa: E402
from rewards.scorer import Scorer, canonical_items  # noqa: E402
from rewards.tasks import humaneval_x, load_embedded  # noqa: E402
from sandbox.config import SandboxConfig  # noqa: E402
from sandbox.pool import SandboxPool  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="docker", choices=["docker", "bwrap"])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", default="bench/results/sanitizer_cost.json")
    args = parser.parse_args()
    sets = {
        "embedded references": canonical_items(load_embedded()),
        "HumanEval-X canonical": [(humaneval_x(row, row["task_id"]), row["canonical_solution"])
                                  for row in read_rows(DATA)],
    }
    report: dict = {"backend": args.backend, "workers": args.workers}
    with SandboxPool(SandboxConfig(backend=args.backend, num_workers=args.workers)) as pool:
        for name, items in sets.items():
            row: dict = {"samples": len(items)}
            for sanitize in (False, True):
                scorer = Scorer(pool, RewardConfig(sanitize=sanitize))
                start = time.monotonic()
                scored = scorer.score(items, progress=True)
                sec = time.monotonic() - start
                key = "sanitized" if sanitize else "plain"
                row[key] = {"seconds": round(sec, 2), "passed": sum(s.passed for s in scored)}
                if sanitize:
                    row["findings"] = [{"task_id": s.task_id, "verdict": s.verdict, "detail": s.detail[:300]}
                                       for s in scored if not s.passed]
            row["slowdown"] = round(row["sanitized"]["seconds"] / row["plain"]["seconds"], 2)
            report[name] = row
            print(f"{name}: {row}", file=sys.stderr)
    save_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
