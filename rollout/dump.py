"""Rollouts a person can read: `out_dir/rollouts/step_NNNNNN.jsonl.gz`, one JSON line per completion.

Each line: step, group key and index, task, prompt, completion, verdict, pass, reward and its components, the
first error (`detail`) and the compiler output's head, the advantage it was trained with (None: its group was
filtered or masked out), truncation, and the policy version that sampled it.

`run.log_rollouts` chooses what is written: `none`, `all`, or `sample:N` — N whole groups per step, half of them
the best and half the worst by mean reward (the two ends are where reward hacking and broken prompts show).
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

from rollout.types import ScoredCompletion, group_by_key

DIAGNOSTICS_HEAD = 1000  # characters of compiler output kept per sample


def dump_path(out_dir: str | Path, step: int) -> Path:
    return Path(out_dir) / "rollouts" / f"step_{step:06d}.jsonl.gz"


def parse_policy(spec: str) -> int | None:
    """Groups per step to keep: None for all, 0 for none."""
    if spec == "all":
        return None
    if spec == "none":
        return 0
    kind, _, n = spec.partition(":")
    if kind != "sample" or not n.isdigit() or int(n) < 1:
        raise ValueError(f"run.log_rollouts: {spec!r} is not none, all or sample:N")
    return int(n)


def select_groups(samples: list[ScoredCompletion], keep: int | None) -> list[ScoredCompletion]:
    """Whole groups: all, none, or the `keep` // 2 best and the rest worst by mean reward (ties by key)."""
    if keep is None:
        return list(samples)
    groups = group_by_key(samples)

    def mean(group: list[ScoredCompletion]) -> float:
        rewards = [s.reward for s in group if s.reward is not None]
        return sum(rewards) / len(rewards) if rewards else float("-inf")

    ranked = sorted(groups, key=lambda k: (-mean(groups[k]), str(k)))
    if keep >= len(ranked):
        chosen = ranked
    else:
        best = keep // 2
        chosen = ranked[:best] + ranked[len(ranked) - (keep - best):]
    return [s for k in chosen for s in groups[k]]


def rollout_row(step: int, s: ScoredCompletion, prompt: str, advantage: float | None) -> dict:
    c = s.completion
    return {"step": step, "key": list(c.key), "index": c.index, "task_id": s.task_id, "prompt": prompt,
            "completion": c.text, "verdict": s.verdict.value, "passed": s.passed, "reward": s.reward,
            "components": s.components, "tests_passed": s.tests_passed, "tests_total": s.tests_total,
            "detail": s.detail, "diagnostics": s.diagnostics[:DIAGNOSTICS_HEAD], "sanitizer": s.sanitizer,
            "advantage": advantage,
            "truncated": c.truncated, "finish_reason": c.finish_reason, "completion_tokens": len(c.completion_ids),
            "version": c.version, **({"turns": s.turns, "first_passed": s.first_passed, "attempts": list(s.attempts)}
                                     if s.attempts else {})}


def write_rollouts(out_dir: str | Path, step: int, rows: list[dict]) -> Path:
    """Written under a temporary name, then renamed: a reader never sees half a file."""
    path = dump_path(out_dir, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with gzip.open(tmp, "wt", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    tmp.replace(path)
    return path


def read_rollouts(path: str | Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
