"""`python -m learner.evaluate --turns 2`: held-out evaluation with revision, through the RLVR producer's own
revision rounds over vLLM-CPU and the real sandbox. Its first attempts are the very samples a turns=1
evaluation scores (same requests, same seeds), so first-try and after-feedback rates compare like for like."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import backend_skip_reason

pytestmark = pytest.mark.slow


def evaluate(policy: str, turns: int, out) -> tuple[dict, list[dict]]:
    proc = subprocess.run([sys.executable, "-m", "learner.evaluate", "--model", policy, "--tasks", "embedded-heldout",
                           "--tiers", "0", "--samples", "4", "--max-new-tokens", "64", "--turns", str(turns),
                           "--out", str(out)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    rows = [json.loads(line) for line in out.with_suffix(".samples.jsonl").read_text().splitlines()]
    return summary, rows


def test_revision_eval_keeps_the_first_attempts_and_reports_both_rates(tiny_policy, tmp_path):
    if reason := backend_skip_reason("bwrap"):
        pytest.skip(reason)
    once, once_rows = evaluate(tiny_policy, 1, tmp_path / "once.json")
    twice, rows = evaluate(tiny_policy, 2, tmp_path / "twice.json")
    first = twice["first_try"]
    assert first["pass@1"] == once["pass@1"] and first["verdicts"] == once["verdicts"]
    assert [r["attempts"][0]["completion"] for r in rows] == [r["completion"] for r in once_rows]
    assert twice["pass@1"] >= first["pass@1"] and twice["tasks"] == once["tasks"]
    failed_first = [r for r in rows if not r["first_passed"]]
    assert failed_first and twice["revision_requests"] == len(failed_first)
    assert all(r["turns"] == 2 and "struct DebugState {" in r["attempts"][0]["feedback"] for r in failed_first)
    assert all(r["turns"] == 1 for r in rows if r["first_passed"])
