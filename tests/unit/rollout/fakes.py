"""Plain-Python stand-ins for the loop's parts, behind the same methods as the real ones: an engine (what a
vLLM actor answers), learner ranks, a reward scorer. They let the real Producer, EngineGroup, Trainer and `run`
be tested in milliseconds; the real parts are tested end to end in tests/integration/learner."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import torch

from learner.driver import Parts, Trainer, split_tasks
from learner.metrics import MetricsSink
from rewards.types import ScoredSample
from rollout.engine_group import EngineDied, EngineGroup, LocalCalls
from rollout.producer import Producer
from rollout.types import Completion, Request


def probe_of(weight: float, ids: list[int]) -> list[float]:
    """The fake model's logprobs: a function of its one weight, so a missed sync shows in the probe."""
    return [-(weight + 1.0) * (1 + (i % 3)) for i in ids[1:]]


class FakeEngine:
    """Completions are a pure function of (request seed, index, the loaded weight): staleness-0 runs are
    reproducible and a stale engine writes different text."""

    def __init__(self, log: list, die_on_generate: set[int] | None = None) -> None:
        self.weight, self.version = 0.0, 0
        self.log, self.die_on = log, die_on_generate or set()
        self.calls = 0

    def get_version(self) -> int:
        return self.version

    def generate(self, requests: list[Request]) -> list[Completion]:
        self.calls += 1
        if self.calls in self.die_on:
            raise EngineDied(f"fake engine killed on generate call {self.calls}")
        self.log.append(("generate", tuple(q.key for q in requests), self.version, time.monotonic()))
        out = []
        for q in requests:
            for i in range(q.n):
                value = (q.seed * 31 + i * 7 + int(self.weight * 1000)) % 97
                n = 3 + value % 5
                # a revision (prefix_ids) gets the conversation's tokens plus two feedback tokens as its prompt
                prompt = (*q.prefix_ids, 90, 91) if q.prefix_ids else (1, 2, 3)
                out.append(Completion(q.key, i, prompt, tuple(range(n)), tuple([-0.5] * n), f"v{value}",
                                      "length" if value % 11 == 0 else "stop", self.version))
        return out

    def load_weights(self, blobs: list[bytes], version: int) -> str:
        from safetensors.torch import load

        from rollout.weight_sync import blobs_digest

        self.weight = float(load(blobs[0])["w"][0])
        self.version = version
        return blobs_digest(blobs)

    def receive_weights(self, address: dict, first_rank: int, layout: dict) -> str:
        self.weight = BUS[address["port"]]
        return repr(self.weight)

    def set_version(self, version: int) -> None:
        self.version = version

    def probe_logprobs(self, ids: list[int]) -> list[float]:
        return probe_of(self.weight, ids)


BUS: dict[int, float] = {}  # the fake transfer group: what the learner "broadcast" to a port


class FakeLearners:
    """One weight; an update adds the mean advantage-weighted reward signal. Save/load persist it. `stream`
    stands for the real broadcast: receivers read the weight from BUS."""

    def __init__(self, update_seconds: float = 0.0) -> None:
        self.weight, self.updates, self.update_seconds = 0.0, [], update_seconds
        self.version = 0
        self.lock = threading.Lock()

    def layout(self, bucket_bytes: int):
        from rollout.weight_transfer import Layout, ParamMeta

        return Layout((ParamMeta("w", "float32", (1,)),), bucket_bytes)

    def stream(self, receivers: int, layout, start_receivers, timeout_s: float) -> tuple[str, int]:
        from rollout.weight_transfer import Address

        with self.lock:
            port = len(BUS) + 1000
            BUS[port] = self.weight
            start_receivers(Address("fake", port, receivers + 1, "gloo", timeout_s))
            return repr(self.weight), self.version

    def update(self, samples) -> dict:
        time.sleep(self.update_seconds)
        self.updates.append(samples)
        self.version += 1
        self.weight += 0.1 + 0.001 * sum(s.advantage * len(s.completion_ids) for s in samples)
        return {"loss": 0.0, "grad_norm": 1.0, "kl": 0.0, "entropy": 1.0, "train_tokens": 1.0}

    def skip(self) -> None:
        self.version += 1

    def export(self) -> dict:
        return {"w": torch.tensor([self.weight])}

    def probe(self, ids: list[int]) -> list[float]:
        return probe_of(self.weight, ids)

    def save(self, directory: str, policy_dir: str | None = None) -> None:
        from pathlib import Path

        Path(directory).mkdir(parents=True, exist_ok=True)
        (Path(directory) / "w.txt").write_text(repr((self.weight, self.version)))

    def load(self, directory: str, version: int | None = None) -> None:
        from pathlib import Path

        import ast

        self.weight, saved = ast.literal_eval((Path(directory) / "w.txt").read_text())
        self.version = version if version is not None else saved

    def close(self) -> None:
        pass


@dataclass
class FakeScorer:
    """Reward from the completion text; `equal_tasks` always get reward 0 (uninformative groups); raises on
    the `fail_on`-th call."""

    equal_tasks: frozenset = frozenset()
    fail_on: int = 0
    seconds: float = 0.0
    calls: int = 0

    def __post_init__(self) -> None:
        self.lock = threading.Lock()

    def __call__(self, items) -> list[ScoredSample]:
        with self.lock:
            self.calls += 1
            if self.fail_on and self.calls == self.fail_on:
                raise RuntimeError("fake scorer failure")
        time.sleep(self.seconds)
        out = []
        for task, text in items:
            value = int(text[1:])
            reward = 0.0 if task.task_id in self.equal_tasks else (value % 4) / 3
            verdict = "COMPILE_ERROR" if value % 5 == 0 else ("OK" if reward > 0.5 else "WRONG_ANSWER")
            out.append(ScoredSample(task.task_id, text, verdict == "OK", verdict, 0, 1, reward,
                                    {"tests": reward}, detail="why" if verdict != "OK" else ""))
        return out


def make_trainer(cfg, scorer=None, engines: int = 1, die_on_generate: set[int] | None = None,
                 learners: FakeLearners | None = None) -> tuple[Trainer, dict]:
    """The real Trainer and Producer over fake engines/learners/scorer; returns it and the fakes."""
    log: list = []
    spawned: list = []

    def spawn():
        engine = FakeEngine(log, die_on_generate if not spawned else None)
        spawned.append(engine)
        return engine

    tasks = split_tasks(cfg)
    group = EngineGroup(spawn, engines, LocalCalls())
    scorer = scorer or FakeScorer()
    learners = learners or FakeLearners()
    producer = Producer(group, scorer, tasks.train, cfg.rollout, cfg.run.seed, cfg.run.staleness)
    sink = MetricsSink(cfg.run.out_dir, tensorboard=False, ray_metrics=False)
    parts = Parts(producer=producer, engines=group, learners=learners, sink=sink)
    trainer = Trainer(cfg, parts, tasks, probe_ids=list(range(12)), model_path=str(cfg.run.out_dir))
    return trainer, {"log": log, "spawned": spawned, "scorer": scorer, "learners": learners, "group": group}
