"""Agreement of Crucible's verdicts with the official harnesses' on public data (rewards/agreement.py).

Builds the labelled cases from HumanEval-X and MultiPL-E (HumanEval and MBPP translations) in
../shared/data, judges each the official way (its assembled program, its flags, exit status 0) and
Crucible's way in the same sandbox, and prints the counts per format and variant with every disagreement.

    .venv/bin/python bench/rewards_agreement.py [--every 1] [--backend docker] [--out bench/results/agreement.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rewards.agreement import humaneval_x_cases, judge, multipl_e_cases, read_rows, report  # noqa: E402
from sandbox.config import SandboxConfig  # noqa: E402
from sandbox.pool import SandboxPool  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--every", type=int, default=1, help="take every N-th task of each dataset")
    parser.add_argument("--backend", default="docker", choices=["docker", "bwrap"])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", default="bench/results/agreement.json")
    args = parser.parse_args()
    cases = (humaneval_x_cases(read_rows(DATA / "humaneval-x" / "humaneval_cpp.jsonl.gz")[::args.every])
             + multipl_e_cases(read_rows(DATA / "multipl-e" / "humaneval-cpp.jsonl.gz")[::args.every],
                               "multipl-e-humaneval")
             + multipl_e_cases(read_rows(DATA / "multipl-e" / "mbpp-cpp.jsonl.gz")[::args.every], "multipl-e-mbpp"))
    start = time.monotonic()
    with SandboxPool(SandboxConfig(backend=args.backend, num_workers=args.workers)) as pool:
        result = report(judge(cases, pool, progress=True))
    result.update(every=args.every, backend=args.backend, seconds=round(time.monotonic() - start, 1))
    for name, row in result["per_variant"].items():
        print(f"{name:<40} {row}", file=sys.stderr)
    for d in result["disagreements"]:
        print(f"DISAGREE {d}", file=sys.stderr)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("cases", "agree", "agreement", "every", "backend", "seconds")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
