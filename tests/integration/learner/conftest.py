"""Fixtures for the RLVR loop: the embedded tiny policy (built once per machine, cached) and local Ray."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import torch

from learner.local_head import LocalRayHead


@pytest.fixture(scope="session")
def tiny_policy() -> str:
    from learner.tiny_policy import build_tiny_policy

    return str(build_tiny_policy())


@pytest.fixture(scope="session")
def uncertain_policy(tiny_policy, tmp_path_factory) -> str:
    """The tiny policy's architecture and tokenizer, freshly initialised with wide weights: a policy unsure of
    every token (the trained tiny policy is so sure of its completions that T barely changes their log-probs)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("uncertain")
    config = AutoConfig.from_pretrained(tiny_policy)
    config.initializer_range = 0.3
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_policy).save_pretrained(out)
    return str(out)


REPO = Path(__file__).resolve().parents[3]
VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def ray_head():
    head = LocalRayHead(num_cpus=2)
    try:
        yield head
    finally:
        head.stop()


def learner_cmd(*overrides: str) -> list[str]:
    return [str(VENV_BIN / "python"), "-m", "learner", "--config", "configs/rlvr/tiny-cpu.yaml", *overrides]


def wait_for(predicate, timeout: float, what: str, poll: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
