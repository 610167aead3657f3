"""Step time of the tiny-cpu RLVR run with staleness 0 (synchronous) vs 1 (generation and scoring of step
t+1 overlap training on step t), in one run, with the phase breakdown from each run's metrics.

    .venv/bin/python bench/rlvr_pipeline.py [--steps 8] [overrides ...]

The first step (engine warm-up) and the last (held-out evaluation) are excluded from the means.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sandbox_throughput import save_report  # noqa: E402

PHASES = ("time_wait_rollout_s", "time_generate_s", "time_score_s", "time_train_s", "time_sync_s", "time_step_s")


def one_run(staleness: int, steps: int, overrides: list[str], out: Path) -> dict:
    cmd = [sys.executable, "-m", "learner", "--config", "configs/rlvr/tiny-cpu.yaml", f"run.steps={steps}",
           f"run.staleness={staleness}", f"run.out_dir={out}", "run.resume=false", *overrides]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"run failed ({' '.join(cmd)}):\n{proc.stderr[-3000:]}")
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    from learner.metrics import read_metrics

    records = read_metrics(out / "metrics.jsonl")[1:-1]
    phases = {k: statistics.mean(r[k] for r in records) for k in PHASES}
    return {"staleness": staleness, "steps_measured": len(records), "mean_step_s": phases["time_step_s"],
            "phases": phases, "staleness_mean": statistics.mean(r["staleness"] for r in records),
            "reward_mean_last": summary["reward_mean_last"], "eval_reward_last": summary["eval_reward_last"]}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--out", default="bench/results/rlvr_pipeline.json")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sync = one_run(0, args.steps, args.overrides, Path(tmp) / "s0")
        async_ = one_run(1, args.steps, args.overrides, Path(tmp) / "s1")
    report = {"sync": sync, "async": async_, "speedup": sync["mean_step_s"] / async_["mean_step_s"],
              "overrides": args.overrides}
    save_report(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
