"""The two sides of the ratio describe one policy at a temperature other than 1: vLLM's log-probs of the tokens
it sampled at T=0.7 (processed: after temperature) and the learner's (log softmax(logits / 0.7)) agree within the
probe tolerance. Before, vLLM returned raw T=1 log-probs and the learner computed T=1 ones while sampling at T."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from learner.policy import first_completion_position, pad_batch, rollout_logprob_tensor, token_logprobs
from rewards.tasks import load_embedded
from rollout.types import TrainingSample

pytestmark = pytest.mark.slow


def sample(policy: str, temperature: float, prompts: list[str], *extra: str) -> list[TrainingSample]:
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("vllm_sample.py")), policy, str(temperature),
                           json.dumps(prompts), *extra], capture_output=True, text=True, timeout=600,
                          cwd=Path(__file__).resolve().parents[3])
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    assert line, proc.stderr[-3000:]
    return [TrainingSample(tuple(r["prompt_ids"]), tuple(r["completion_ids"]), tuple(r["logprobs"]), 0.0)
            for r in json.loads(line[len("RESULT "):])]


def test_vllm_and_learner_logprobs_agree_at_temperature_07(uncertain_policy):
    from transformers import AutoModelForCausalLM

    from learner.config import AlgoConfig

    prompts = [t.prompt.rstrip() for t in load_embedded()[:3]]
    samples = sample(uncertain_policy, 0.7, prompts)
    assert len(samples) == 6 and all(s.completion_ids for s in samples)
    model = AutoModelForCausalLM.from_pretrained(uncertain_policy, dtype=torch.float32).eval()
    ids, attn, comp = pad_batch(samples, pad_id=0)
    vllm_lp = rollout_logprob_tensor(samples, ids.shape[1])

    def mean_gap(temperature: float) -> float:
        with torch.no_grad():
            mine, _ = token_logprobs(model, ids, attn, temperature=temperature, first=first_completion_position(samples))
        return float(((mine - vllm_lp).abs() * comp).sum() / comp.sum())

    tolerance = AlgoConfig().probe_tolerance
    at_t, at_1 = mean_gap(0.7), mean_gap(1.0)
    assert at_t < tolerance, (at_t, at_1)  # the same distribution on both sides
    assert at_1 > tolerance, (at_t, at_1)  # what the learner computed before: a different policy


def test_chat_mode_samples_from_the_models_chat_template(uncertain_policy, tmp_path):
    """rollout.chat_template: vLLM is prompted with the template-rendered request, and those are the prompt
    tokens the learner trains on (they come back in the Completion)."""
    import shutil

    from transformers import AutoTokenizer

    chat_model = tmp_path / "chat"
    shutil.copytree(uncertain_policy, chat_model)
    tok = AutoTokenizer.from_pretrained(chat_model)
    tok.chat_template = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}<|assistant|>"
    tok.save_pretrained(chat_model)
    samples = sample(str(chat_model), 1.0, ["int add(int a, int b) {"], "chat")
    prompt = tok.decode(samples[0].prompt_ids)
    assert prompt.startswith("<|user|>Complete the following C++ function") and prompt.endswith("<|assistant|>")
    assert "int add(int a, int b) {" in prompt
