"""One reward, two trainer signatures: TRL's GRPOTrainer reward function and verl's `compute_score`.

TRL calls `reward_func(prompts=..., completions=..., completion_ids=..., trainer_state=..., **columns)` with
every dataset column as a list, and logs under `reward_func.__name__`; `None` marks a sample it should
ignore (we return None for sandbox failures). verl calls `compute_score(data_source, solution_str,
ground_truth, extra_info)` per sample (or with lists in its batch reward manager) and accepts a dict with
a "score" key plus extra metrics.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from functools import lru_cache

from rewards.reward import RewardConfig
from rewards.tasks import load_tasks, native
from rewards.types import Task


def _completion_text(completion) -> str:
    """TRL passes strings (standard format) or message lists (conversational format)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    raise ValueError(f"unsupported completion type {type(completion).__name__}")


def task_from_ground_truth(ground_truth, known: dict[str, Task]) -> Task:
    """verl's ground_truth: a task_id of the loaded task file, or the task itself (dict or JSON)."""
    if isinstance(ground_truth, str) and ground_truth in known:
        return known[ground_truth]
    data = json.loads(ground_truth) if isinstance(ground_truth, str) else ground_truth
    if not isinstance(data, dict):
        raise ValueError(f"ground_truth must be a task_id or a task object, got {type(ground_truth).__name__}")
    return native(data, "ground_truth")


class CppReward:
    """Callable C++ reward owning a sandbox pool (started on first use, closed by `close()`)."""

    __name__ = "cpp_reward"  # TRL names the reward's log column after the function

    def __init__(self, tasks: Sequence[Task] | None = None, sandbox=None, config: RewardConfig | None = None,
                 mode: str = "raw") -> None:
        self.tasks = {t.task_id: t for t in tasks or ()}
        self._sandbox_config = sandbox
        self.config = config or RewardConfig()
        self.mode = mode
        self._scorer = None
        self._pool = None
        self._lock = threading.Lock()
        self.last_samples: list = []  # per-sample components of the latest call, for dashboards

    def _get_scorer(self):
        with self._lock:
            if self._scorer is None:
                from rewards.scorer import Scorer
                from sandbox.config import SandboxConfig
                from sandbox.pool import SandboxPool

                self._pool = SandboxPool(self._sandbox_config or SandboxConfig()).start()
                self._scorer = Scorer(self._pool, self.config, self.mode)
            return self._scorer

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.close()
            self._pool = self._scorer = None

    def score_items(self, items: list[tuple[Task, str]]) -> list:
        self.last_samples = self._get_scorer().score(items)
        return self.last_samples

    # ------------------------------------------------------------------ TRL
    def __call__(self, prompts: list, completions: list, completion_ids=None, **columns) -> list[float | None]:
        ids = columns.get("task_id")
        if ids is None:
            raise ValueError("the dataset needs a 'task_id' column naming each prompt's task")
        items = []
        for i, (task_id, completion) in enumerate(zip(ids, completions)):
            if task_id not in self.tasks:
                raise ValueError(f"row {i}: task_id {task_id!r} is not among the {len(self.tasks)} loaded tasks")
            items.append((self.tasks[task_id], _completion_text(completion)))
        return [s.reward for s in self.score_items(items)]

    # ------------------------------------------------------------------ verl
    def compute_score(self, data_source, solution_str, ground_truth, extra_info=None):
        if isinstance(solution_str, list):  # verl's batch reward manager passes lists
            items = [(task_from_ground_truth(g, self.tasks), s) for s, g in zip(solution_str, ground_truth)]
            return [self._verl_result(s) for s in self.score_items(items)]
        task = task_from_ground_truth(ground_truth, self.tasks)
        return self._verl_result(self.score_items([(task, solution_str)])[0])

    @staticmethod
    def _verl_result(sample) -> dict:
        # verl needs a number: a sandbox failure scores 0 and is flagged so it can be filtered or counted.
        return {"score": sample.reward if sample.reward is not None else 0.0, "passed": float(sample.passed),
                "sandbox_error": float(sample.reward is None),
                **{f"reward_{k}": v for k, v in sample.components.items()}}


@lru_cache(maxsize=4)
def default_reward(tasks_path: str | None = None) -> CppReward:
    """A process-wide CppReward for frameworks that import a plain function (verl's custom_reward_function)."""
    return CppReward(load_tasks(tasks_path) if tasks_path else ())


def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    """verl entry point: `custom_reward_function.path=rewards/adapters.py`, `name=compute_score`.
    `extra_info["tasks_path"]` (optional) names a task file so ground_truth can be a task_id."""
    tasks_path = (extra_info or {}).get("tasks_path") if isinstance(extra_info, dict) else None
    return default_reward(tasks_path).compute_score(data_source, solution_str, ground_truth, extra_info)
