"""The Ray side of the loop: a group of rollout engines (replaced when one dies, with the current weights
re-pushed) and a group of learner ranks. The driver only talks to these two objects and the reward pool."""

from __future__ import annotations

import logging
import socket
import threading

import ray

from rollout.engine import RolloutEngine
from rollout.weight_sync import state_to_bytes

log = logging.getLogger("crucible.learner")
ENGINE_DIED = ray.exceptions.RayActorError  # ActorDiedError and friends derive from it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EngineGroup:
    def __init__(self, model_path: str, cfg: dict) -> None:
        self.model_path, self.cfg = model_path, cfg
        r = cfg["rollout"]
        self.options = {"num_cpus": r["cpus_per_engine"], "num_gpus": r["gpus_per_engine"], "max_restarts": 0}
        self.lock = threading.Lock()  # the producer thread generates while the driver syncs
        self.engines = [self._new() for _ in range(r["engines"])]
        ray.get([e.get_version.remote() for e in self.engines])  # fail fast if vLLM cannot start
        self.weights_ref = None  # the newest pushed weights, for engines started later
        self.version = 0
        self.restarts = 0

    def _new(self):
        return ray.remote(RolloutEngine).options(**self.options).remote(
            self.model_path, self.cfg["rollout"], self.cfg["model"]["dtype"], self.cfg["run"]["seed"])

    def _replace(self, idx: int, dead) -> None:
        with self.lock:
            if self.engines[idx] is not dead:
                return
            log.warning("rollout engine %d died; starting a new one at policy version %d", idx, self.version)
            engine = self._new()
            if self.weights_ref is not None:
                ray.get(engine.load_weights.remote(self.weights_ref, self.version))
            self.engines[idx] = engine
            self.restarts += 1

    def generate(self, requests: list[dict], max_attempts: int = 3) -> list[dict]:
        """Requests spread round-robin over engines; a chunk whose engine dies is re-run on its replacement,
        so each request yields its samples exactly once."""
        with self.lock:
            engines = list(self.engines)
        chunks = {i: requests[i :: len(engines)] for i in range(len(engines))}
        results: dict[int, list[dict]] = {}
        attempts = dict.fromkeys(chunks, 0)
        while chunks:
            refs = {}
            for i, chunk in chunks.items():
                if chunk:
                    with self.lock:
                        engine = self.engines[i]
                    refs[engine.generate.remote(chunk)] = (i, engine)
                else:
                    results[i] = []
            chunks = {}
            for ref, (i, engine) in refs.items():
                try:
                    results[i] = ray.get(ref)
                except ENGINE_DIED as exc:
                    attempts[i] += 1
                    if attempts[i] >= max_attempts:
                        raise RuntimeError(f"rollout engine {i} failed {attempts[i]} times: {exc}") from exc
                    self._replace(i, engine)
                    chunks[i] = requests[i :: len(engines)]
        return [s for i in sorted(results) for s in results[i]]

    def push(self, state: dict, version: int) -> float:
        """Send the learner's weights to every engine; returns the bytes' size in MB."""
        blob = state_to_bytes(state)
        with self.lock:
            self.weights_ref = ray.put(blob)
            self.version = version
            engines = list(self.engines)
        for i, engine in enumerate(engines):
            try:
                ray.get(engine.load_weights.remote(self.weights_ref, version))
            except ENGINE_DIED:
                self._replace(i, engine)  # the replacement loads weights_ref itself
        return len(blob) / 2**20

    def call_first(self, method: str, *args):
        for attempt in range(3):
            with self.lock:
                engine = self.engines[0]
            try:
                return ray.get(getattr(engine, method).remote(*args))
            except ENGINE_DIED:
                if attempt == 2:
                    raise
                self._replace(0, engine)

    def close(self) -> None:
        for e in self.engines:
            ray.kill(e)


class LearnerGroup:
    def __init__(self, model_path: str, cfg: dict) -> None:
        from learner.worker import LearnerWorker

        lc = cfg["learner"]
        world, port = lc["world_size"], free_port()
        actor = ray.remote(LearnerWorker).options(num_cpus=lc["cpus_per_worker"], num_gpus=lc["gpus_per_worker"])
        self.workers = [actor.remote(cfg, model_path, rank, world, port) for rank in range(world)]
        self.world = world

    def all(self, method: str, *per_rank_args, args: tuple = ()) -> list:
        """Call `method` on every rank at once (collectives need that); per_rank_args are lists by rank."""
        refs = [getattr(w, method).remote(*[a[r] for a in per_rank_args], *args) for r, w in enumerate(self.workers)]
        return ray.get(refs)

    def close(self) -> None:
        try:
            ray.get([w.close.remote() for w in self.workers], timeout=60)
        finally:
            for w in self.workers:
                ray.kill(w)
