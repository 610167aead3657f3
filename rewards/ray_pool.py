"""A Ray actor pool of reward workers, each owning sandbox slots, sized by the cluster's CPU resources.

`RewardActorPool.score(items)` splits a batch into chunks, keeps at most `max_inflight_per_worker` chunks
queued on each actor (backpressure: the driver never floods the cluster), resubmits a chunk whose actor
died to a fresh actor (retries), and exports metrics through `ray.util.metrics` (they appear with a `ray_`
prefix at each node's metrics port, so in the Ray dashboard's Grafana). Place workers on specific nodes
with a custom resource (`resources={"reward": 1}` and `ray start --resources='{"reward": 4}'`).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict

import ray

from rewards.types import ScoredSample, StdioCase, Task

log = logging.getLogger(__name__)


def _task_to_dict(task: Task) -> dict:
    data = asdict(task)
    data["cases"] = [asdict(c) for c in task.cases]
    return data


def _task_from_dict(data: dict) -> Task:
    data = dict(data)
    data["cases"] = tuple(StdioCase(**c) for c in data["cases"])
    for key in ("stop_tokens", "flags", "link_flags"):
        data[key] = tuple(data[key])
    return Task(**data)


@ray.remote
class RewardWorker:
    """Owns a SandboxPool with `slots` jails; scores chunks of (task, completion)."""

    def __init__(self, sandbox_config: dict, reward_config: dict, mode: str) -> None:
        from ray.util import metrics

        from rewards.reward import RewardConfig
        from rewards.scorer import Scorer
        from sandbox.config import SandboxConfig
        from sandbox.pool import SandboxPool

        if not sandbox_config.get("num_workers"):  # 0: a jail per core of this node
            sandbox_config = {**sandbox_config, "num_workers": len(os.sched_getaffinity(0))}
        self.slots = sandbox_config["num_workers"]
        self.pool = SandboxPool(SandboxConfig(**sandbox_config)).start()
        self.scorer = Scorer(self.pool, RewardConfig(**reward_config), mode)
        self.samples = metrics.Counter("crucible_reward_samples", "samples scored", tag_keys=("verdict",))
        self.sandbox_errors = metrics.Counter("crucible_reward_sandbox_errors", "samples lost to sandbox failures")
        self.latency = metrics.Histogram("crucible_reward_chunk_seconds", "time to score one chunk",
                                         boundaries=[0.1, 0.5, 1, 2, 5, 10, 30, 60])
        self.reward = metrics.Gauge("crucible_reward_last_mean", "mean reward of the last chunk")

    def score(self, chunk: list[tuple[dict, str]]) -> list[dict]:
        start = time.monotonic()
        scored = self.scorer.score([(_task_from_dict(t), c) for t, c in chunk])
        for s in scored:
            self.samples.inc(1, tags={"verdict": s.verdict})
            if s.reward is None:
                self.sandbox_errors.inc(1)
        rewards = [s.reward for s in scored if s.reward is not None]
        if rewards:
            self.reward.set(sum(rewards) / len(rewards))
        self.latency.observe(time.monotonic() - start)
        return [{**s.__dict__} for s in scored]

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()

    def close(self) -> None:
        self.pool.close()


class RewardActorPool:
    def __init__(self, num_workers: int | None = None, slots_per_worker: int = 1, sandbox: dict | None = None,
                 reward: dict | None = None, mode: str = "raw", chunk_size: int = 8,
                 max_inflight_per_worker: int = 2, max_chunk_retries: int = 2,
                 resources: dict[str, float] | None = None, cpus_per_worker: float | None = None,
                 call_timeout_s: float | None = None) -> None:
        """`slots_per_worker`: jails per actor (0: one per core of its node); `cpus_per_worker`: the Ray CPUs each
        actor reserves (default: its slots). Scoring may use cores reserved for engines and learners, which
        wait for the scores at staleness 0."""
        reserve = cpus_per_worker if cpus_per_worker is not None else float(slots_per_worker or 1)
        if num_workers is None:  # one worker per `reserve` CPUs of the cluster
            num_workers = max(1, int(ray.cluster_resources().get("CPU", 1) // reserve))
        self.sandbox = {**(sandbox or {}), "num_workers": slots_per_worker}
        self.reward, self.mode = reward or {}, mode
        self.options = {"num_cpus": reserve, "resources": resources or {}}
        self.chunk_size = chunk_size
        self.max_inflight = max_inflight_per_worker
        self.max_chunk_retries = max_chunk_retries
        self.call_timeout_s = call_timeout_s  # no chunk finishing for this long is an error, not a hang
        self.workers = [self._new_worker() for _ in range(num_workers)]
        self.restarts = 0

    def _new_worker(self):
        return RewardWorker.options(**self.options).remote(self.sandbox, self.reward, self.mode)

    def score(self, items: list[tuple[Task, str]]) -> list[ScoredSample]:
        """Results in input order; every sample scored exactly once."""
        payload = [(_task_to_dict(t), c) for t, c in items]
        chunks = [(i, payload[i : i + self.chunk_size]) for i in range(0, len(payload), self.chunk_size)]
        results: list[dict | None] = [None] * len(payload)
        pending = list(reversed(chunks))
        attempts: dict[int, int] = {}
        inflight: dict = {}  # ObjectRef -> (worker index, chunk)
        load = [0] * len(self.workers)
        while pending or inflight:
            while pending:  # backpressure: only fill workers below their in-flight cap
                idx = min(range(len(self.workers)), key=load.__getitem__)
                if load[idx] >= self.max_inflight:
                    break
                chunk = pending.pop()
                worker = self.workers[idx]
                inflight[worker.score.remote(chunk[1])] = (idx, worker, chunk)
                load[idx] += 1
            done, _ = ray.wait(list(inflight), num_returns=1, timeout=self.call_timeout_s)
            if not done:
                raise RuntimeError(f"scoring: no reward chunk finished within {self.call_timeout_s:g}s "
                                   f"(run.call_timeout_s); {len(inflight)} chunks in flight")
            ref = done[0]
            idx, worker, (start, chunk) = inflight.pop(ref)
            load[idx] -= 1
            try:
                for offset, row in enumerate(ray.get(ref)):
                    results[start + offset] = row
            except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as exc:
                attempts[start] = attempts.get(start, 0) + 1
                if attempts[start] > self.max_chunk_retries:
                    raise RuntimeError(f"reward chunk at {start} failed {attempts[start]} times: {exc}") from exc
                if self.workers[idx] is worker:  # first failure seen from this actor: replace it once
                    log.warning("reward worker %d died (%s); restarting it", idx, exc)
                    self.workers[idx] = self._new_worker()
                    self.restarts += 1
                pending.append((start, chunk))
        return [ScoredSample(**row) for row in results]  # type: ignore[arg-type]

    def close(self) -> None:
        ray.get([w.close.remote() for w in self.workers], timeout=120)
        for w in self.workers:
            ray.kill(w)
