"""Learning: GRPO on the trivial tier raises the reward measured on *held-out* prompts.

The held-out evaluation samples from vLLM with fixed seeds before the first and after the last step, so a
sign error (reward falls) or a broken weight sync (vLLM keeps the old weights: the two evaluations are
identical) fails this test. Measured when written (6 steps, 8 samples x 6 held-out prompts): reward
-0.88 -> +0.4 to +0.6, compile rate 0 -> ~0.7."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.integration.learner.conftest import REPO, learner_cmd

pytestmark = pytest.mark.slow


def test_heldout_reward_rises_on_the_trivial_tier(tmp_path):
    out = tmp_path / "learn"
    proc = subprocess.run(learner_cmd("run.steps=6", f"run.out_dir={out}", "run.ray_address=local", "run.eval_samples=8", "tasks.tiers=[0]"),
                          cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-4000:]
    s = json.loads(proc.stdout.strip().splitlines()[-1])
    first, last = s["eval_reward_first"], s["eval_reward_last"]
    assert last - first >= 0.5, f"held-out reward did not rise clearly: {first} -> {last}"
    assert s["reward_mean_last"] > s["reward_mean_first"]
