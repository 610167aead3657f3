"""Fixtures for the RLVR loop: the embedded tiny policy (built once per machine, cached) and local Ray."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from learner.local_head import LocalRayHead


@pytest.fixture(scope="session")
def tiny_policy() -> str:
    from learner.tiny_policy import build_tiny_policy

    return str(build_tiny_policy())


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
