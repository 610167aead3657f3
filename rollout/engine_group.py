"""A group of rollout engines behind one typed interface: generate, push weights, probe.

An engine that dies is replaced, the newest pushed weights are loaded into the replacement before it serves,
and the requests it held are re-run there, so every request yields its completions exactly once. How engines
are reached is one small adapter: `RayCalls` for engine actors (what runs), `LocalCalls` for plain objects in
this process (fast tests of the retry logic, single-process tools).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from functools import partial
from typing import Any

from rollout.types import Completion, Request

log = logging.getLogger("crucible.rollout")


class EngineDied(RuntimeError):
    """The engine's process is gone (killed, OOM, node lost); the group replaces it."""


class RayCalls:
    def submit(self, engine, method: str, *args):
        return getattr(engine, method).remote(*args)

    def result(self, ref):
        import ray

        try:
            return ray.get(ref)
        except ray.exceptions.RayActorError as exc:  # ActorDiedError and friends derive from it
            raise EngineDied(str(exc)) from exc

    def put(self, blob: bytes):
        import ray

        return ray.put(blob)

    def kill(self, engine) -> None:
        import ray

        ray.kill(engine)


class LocalCalls:
    """Engines are objects in this process; a method raising EngineDied stands for a dead actor."""

    def submit(self, engine, method: str, *args):
        return partial(getattr(engine, method), *args)

    def result(self, thunk):
        return thunk()

    def put(self, blob: bytes):
        return blob

    def kill(self, engine) -> None:
        pass


class EngineGroup:
    def __init__(self, spawn: Callable[[], Any], count: int, calls: RayCalls | LocalCalls,
                 max_attempts: int = 3) -> None:
        self.spawn, self.calls, self.max_attempts = spawn, calls, max_attempts
        self.lock = threading.Lock()  # the producer thread generates while the driver pushes weights
        self.engines = [spawn() for _ in range(count)]
        for e in self.engines:  # fail fast if an engine cannot start
            calls.result(calls.submit(e, "get_version"))
        self.weights_ref = None  # the newest pushed weights, for engines started later
        self.version = 0
        self.restarts = 0
        self.closed = False  # once closed, a dead engine is not replaced (the run is ending)

    @classmethod
    def on_ray(cls, model_path: str, rollout, dtype: str, seed: int) -> EngineGroup:
        """`rollout.engines` vLLM engine actors, each with `rollout.cpus_per_engine`/`gpus_per_engine`."""
        import ray

        from rollout.engine import RolloutEngine

        actor = ray.remote(RolloutEngine).options(num_cpus=rollout.cpus_per_engine,
                                                  num_gpus=rollout.gpus_per_engine, max_restarts=0)
        return cls(lambda: actor.remote(model_path, rollout, dtype, seed), rollout.engines, RayCalls())

    def _replace(self, idx: int, dead) -> None:
        with self.lock:
            if self.closed:
                raise EngineDied("the engine group is closed")
            if self.engines[idx] is not dead:  # another caller replaced it already
                return
            log.warning("rollout engine %d died; starting a new one at policy version %d", idx, self.version)
            # An unreachable actor (Ray's ActorUnavailableError is a RayActorError too) may still hold its CPUs
            # or GPU; kill it so the replacement can be placed.
            try:
                self.calls.kill(dead)
            except Exception as exc:  # already gone
                log.debug("killing dead engine %d: %s", idx, exc)
            engine = self.spawn()
            if self.weights_ref is not None:
                try:
                    self.calls.result(self.calls.submit(engine, "load_weights", self.weights_ref, self.version))
                except EngineDied:
                    self.calls.kill(engine)
                    raise
            self.engines[idx] = engine
            self.restarts += 1

    def _engine(self, idx: int):
        with self.lock:
            return self.engines[idx]

    def generate(self, requests: list[Request]) -> list[Completion]:
        """Requests spread round-robin over engines, completions returned in request order; each request
        yields exactly its `n` completions (a group key names one request)."""
        if len({q.key for q in requests}) != len(requests):
            raise ValueError("generate: two requests share a group key; keys identify groups and must be unique")
        count = len(self.engines)
        chunks = {i: requests[i::count] for i in range(count) if requests[i::count]}
        results: dict[int, list[Completion]] = {}
        attempts = dict.fromkeys(chunks, 0)
        while chunks:
            submitted = {i: (engine := self._engine(i), self.calls.submit(engine, "generate", chunk))
                         for i, chunk in chunks.items()}
            retry = {}
            for i, (engine, ref) in submitted.items():
                try:
                    results[i] = self.calls.result(ref)
                except EngineDied as exc:
                    attempts[i] += 1
                    if attempts[i] >= self.max_attempts:
                        raise RuntimeError(f"rollout engine {i} failed {attempts[i]} times: {exc}") from exc
                    retry[i] = chunks[i]
                    try:
                        self._replace(i, engine)
                    except EngineDied:
                        if self.closed:
                            raise
                        # the replacement died while loading weights: the next round counts it as an attempt
            chunks = retry
        # undo the round-robin: request j went to engine j % count as its (j // count)-th request
        by_request: dict = {}
        for i in sorted(results):
            for c in results[i]:
                by_request.setdefault(c.key, []).append(c)
        out = []
        for q in requests:
            got = by_request.get(q.key, [])
            if len(got) != q.n:
                raise RuntimeError(f"engine returned {len(got)} completions for request {q.key}, asked for {q.n}")
            out += got
        return out

    def push(self, blob: bytes, version: int) -> float:
        """Load serialized weights (rollout.weight_sync.state_to_bytes) into every engine; returns MB sent."""
        with self.lock:
            self.weights_ref = self.calls.put(blob)
            self.version = version
            engines = list(self.engines)
        for i, engine in enumerate(engines):
            try:
                self.calls.result(self.calls.submit(engine, "load_weights", self.weights_ref, version))
            except EngineDied:
                self._replace(i, engine)  # the replacement loads weights_ref itself
        return len(blob) / 2**20

    def probe(self, token_ids: list[int]) -> list[float]:
        """Engine 0's logprob of each token of `token_ids` given the ones before."""
        for attempt in range(self.max_attempts):
            engine = self._engine(0)
            try:
                return self.calls.result(self.calls.submit(engine, "probe_logprobs", token_ids))
            except EngineDied:
                if attempt == self.max_attempts - 1:
                    raise
                self._replace(0, engine)
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self.lock:
            self.closed = True
            engines = list(self.engines)
        for e in engines:
            self.calls.kill(e)
