"""Hand-made rollout records for unit tests."""

from __future__ import annotations

from rollout.types import Completion, ScoredCompletion
from sandbox.types import Verdict


def completion(key, idx: int, n: int = 4, truncated: bool = False, version: int = 0, text: str = "x") -> Completion:
    key = key if isinstance(key, tuple) else (key,)
    return Completion(key=key, index=idx, prompt_ids=(5, 6), completion_ids=(1,) * n, rollout_logprobs=(-1.0,) * n,
                      text=text, finish_reason="length" if truncated else "stop", version=version)


def scored(key, idx: int, reward: float | None, n: int = 4, truncated: bool = False, verdict: str = "OK",
           passed: bool = True, task_id: str = "t") -> ScoredCompletion:
    return ScoredCompletion(completion(key, idx, n, truncated), task_id=task_id, verdict=Verdict(verdict),
                            passed=passed, reward=reward, components={"compile": 1.0})
