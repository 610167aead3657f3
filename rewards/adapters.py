"""One reward, two trainer signatures: TRL's GRPOTrainer reward function and verl's `compute_score`.

TRL (1.16, `GRPOTrainer._calculate_rewards`) calls `reward_func(prompts=..., completions=...,
completion_ids=..., trainer_state=..., log_extra=..., log_metric=..., **columns)` with every dataset column
as a list, and logs under `reward_func.__name__`; `None` marks a sample it should ignore (we return None for
sandbox failures). We log each sample's verdict and first compiler error with `log_extra` and the batch's
compile and pass rates with `log_metric`. Every TRL process (one per local rank) owns a sandbox pool sized
to its share of the node's cores.

verl calls `compute_score(data_source=, solution_str=, ground_truth=, extra_info=, **reward_kwargs)` per
sample (naive reward manager) or `compute_score(data_sources=, solution_strs=, ground_truths=,
extra_infos=, **reward_kwargs)` (batch reward manager), where `reward_kwargs` are the config's
`custom_reward_function.reward_kwargs`: here `tasks_path`, `backend`, `workers` and `mode`. It accepts a
dict with a "score" key plus extra metrics (a list of them for the batch form).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from functools import lru_cache

from rewards.reward import RewardConfig
from rewards.tasks import load_tasks, task_from_row
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
    return task_from_row(data, "ground_truth")


def local_share_of_cores() -> int:
    """Sandbox workers for this process: the node's cores split between the local ranks (torchrun and
    accelerate set LOCAL_WORLD_SIZE), so eight trainer processes do not start eight full-size pools."""
    ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    return max(1, (os.cpu_count() or 1) // max(ranks, 1))


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

                config = self._sandbox_config or SandboxConfig(num_workers=local_share_of_cores())
                self._pool = SandboxPool(config).start()
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
    def __call__(self, prompts: list, completions: list, completion_ids=None, log_extra=None, log_metric=None,
                 trainer_state=None, **columns) -> list[float | None]:
        ids = columns.get("task_id")
        if ids is None:
            raise ValueError("the dataset needs a 'task_id' column naming each prompt's task")
        items = []
        for i, (task_id, completion) in enumerate(zip(ids, completions)):
            if task_id not in self.tasks:
                raise ValueError(f"row {i}: task_id {task_id!r} is not among the {len(self.tasks)} loaded tasks")
            items.append((self.tasks[task_id], _completion_text(completion)))
        scored = self.score_items(items)
        if log_extra is not None:  # columns of TRL's completions table
            log_extra("verdict", [s.verdict for s in scored])
            log_extra("compile_error", [s.detail if s.verdict == "COMPILE_ERROR" else "" for s in scored])
        if log_metric is not None and scored:
            log_metric("cpp/compile_rate", sum(s.verdict != "COMPILE_ERROR" for s in scored) / len(scored))
            log_metric("cpp/pass_rate", sum(s.passed for s in scored) / len(scored))
            log_metric("cpp/sandbox_errors", float(sum(s.reward is None for s in scored)))
        return [s.reward for s in scored]

    # ------------------------------------------------------------------ verl
    def compute_score(self, data_source=None, solution_str=None, ground_truth=None, extra_info=None, *,
                      data_sources=None, solution_strs=None, ground_truths=None, extra_infos=None, **_):
        """Both verl forms: singular per sample (naive manager), plural lists (batch manager); a list passed
        in the singular form is also taken as a batch."""
        if solution_strs is not None or isinstance(solution_str, list):
            strs = list(solution_strs if solution_strs is not None else solution_str)
            truths = list(ground_truths if ground_truths is not None else ground_truth)
            if len(strs) != len(truths):
                raise ValueError(f"{len(strs)} solution strings but {len(truths)} ground truths")
            items = [(task_from_ground_truth(g, self.tasks), s) for s, g in zip(strs, truths)]
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
def default_reward(tasks_path: str | None = None, backend: str | None = None, workers: int | None = None,
                   mode: str = "raw") -> CppReward:
    """A process-wide CppReward for frameworks that import a plain function (verl's custom_reward_function)."""
    from sandbox.config import SandboxConfig

    sandbox = SandboxConfig(**({"backend": backend} if backend else {}),
                            num_workers=workers or local_share_of_cores())
    return CppReward(load_tasks(tasks_path) if tasks_path else (), sandbox=sandbox, mode=mode)


def compute_score(data_source=None, solution_str=None, ground_truth=None, extra_info=None, *, data_sources=None,
                  solution_strs=None, ground_truths=None, extra_infos=None, tasks_path: str | None = None,
                  backend: str | None = None, workers: int | None = None, mode: str = "raw", **_):
    """verl entry point: `custom_reward_function.path=rewards/adapters.py`, `name=compute_score`, with
    `custom_reward_function.reward_kwargs` for `tasks_path` (so ground_truth can be a task_id), `backend`,
    `workers` and `mode`. `extra_info["tasks_path"]` is also read, for older configs."""
    info = extra_info if isinstance(extra_info, dict) else (extra_infos[0] if extra_infos else None)
    if tasks_path is None and isinstance(info, dict):
        tasks_path = info.get("tasks_path")
    reward = default_reward(tasks_path, backend, workers, mode)
    return reward.compute_score(data_source, solution_str, ground_truth, extra_info, data_sources=data_sources,
                                solution_strs=solution_strs, ground_truths=ground_truths, extra_infos=extra_infos)
