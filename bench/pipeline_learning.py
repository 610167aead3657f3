"""Does RLVR beat its SFT starting point? The demo pipeline (configs/pipeline/tiny-cpu.yaml, 3 seeds), with the
SFT policy as the baseline, both scored by the same held-out evaluation in the same run.

    .venv/bin/python bench/pipeline_learning.py [--out-dir runs/demo] [key=value ...]   # ~25 min; reuses a finished demo
    .venv/bin/python bench/pipeline_learning.py --config configs/pipeline/families-cpu.yaml --out-dir runs/demo-families

Prints a Markdown table per stage and per seed and writes bench/results/pipeline_learning-<config>.json."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out-dir", default="runs/demo")
    parser.add_argument("--config", default="configs/pipeline/tiny-cpu.yaml")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    proc = subprocess.run([sys.executable, "-m", "scripts.pipeline", "--config", args.config,
                           f"out_dir={args.out_dir}", *args.overrides], cwd=REPO, stdout=subprocess.PIPE, text=True)
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    if proc.returncode != 0:
        print(summary.get("error"), file=sys.stderr)
        return proc.returncode
    out = Path(args.out_dir) if Path(args.out_dir).is_absolute() else REPO / args.out_dir
    evals = {p.name.removesuffix(".json"): json.loads(p.read_text()) for p in sorted((out / "eval").glob("*.json"))
             if not p.name.endswith(".stage.json")}
    learning = summary["learning"]
    if any("first_try" in ev for ev in evals.values()):  # eval.turns > 1: first try and after feedback, per tier
        tiers = sorted({t for ev in evals.values() for t in ev["by_tier"]})
        print("| checkpoint | tasks | first-try pass@1 | after-feedback pass@1 | "
              + " | ".join(f"{t}: first → after" for t in tiers) + " | reward |\n|" + "---|" * (5 + len(tiers)))
        for name, ev in evals.items():
            first = ev["first_try"]
            cells = [f"{first['by_tier'][t]['pass@1']:.3f} → {ev['by_tier'][t]['pass@1']:.3f}" for t in tiers]
            print(f"| {name} | {ev['tasks']} | {first['pass@1']:.3f} | {ev['pass@1']:.3f} | {' | '.join(cells)} | "
                  f"{ev['reward_mean']:+.3f} |")
    else:
        print("| checkpoint | pass@1 (16 held-out tasks) | reward (all) | pass@1 (tier 0) | reward (tier 0) | "
              "compile rate (tier 0) |\n|---|---|---|---|---|---|")
        for name, ev in evals.items():
            t0 = ev["by_tier"]["tier0"]
            compiled = 1 - t0["verdicts"].get("COMPILE_ERROR", 0) / t0["samples"]
            print(f"| {name} | {ev['pass@1']:.3f} | {ev['reward_mean']:+.3f} | {t0['pass@1']:.3f} | "
                  f"{t0['reward_mean']:+.3f} | {compiled:.3f} |")
    print(f"\nstart ({learning['start']}) {learning['metric']} {learning['sft'][learning['metric']]}; per seed:")
    print("| seed | RLVR pass@1 | RLVR reward | gain | learner's held-out eval reward: before → after |\n|---|---|---|---|---|")
    for s in learning["seeds"]:
        print(f"| {s['seed']} | {s['pass@1']:.3f} | {s['reward_mean']:+.3f} | {s['gain']:+.3f} | "
              f"{s['learner_eval_reward_first']:+.3f} → {s['learner_eval_reward_last']:+.3f} |")
    print(f"\nimproved on every seed (gain ≥ {learning['min_gain']}): {learning['improved_every_seed']}; "
          f"stage seconds: {summary['seconds']}")
    results = REPO / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / f"pipeline_learning-{Path(args.config).stem}.json").write_text(json.dumps({"summary": summary, "evals": evals}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
