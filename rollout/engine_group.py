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
from dataclasses import asdict
from functools import partial
from typing import Any

from rollout.types import Completion, Request

log = logging.getLogger("crucible.rollout")


class EngineDied(RuntimeError):
    """The engine's process is gone (killed, OOM, node lost); the group replaces it."""


class StageTimeout(RuntimeError):
    """A remote call that did not answer in time: a hang turned into an error that names the stage."""


class RayCalls:
    def __init__(self, timeout_s: float | None = None) -> None:
        self.timeout_s = timeout_s

    def submit(self, engine, method: str, *args):
        return method, getattr(engine, method).remote(*args)

    def result(self, call):
        import ray

        method, ref = call
        try:
            return ray.get(ref, timeout=self.timeout_s)
        except ray.exceptions.GetTimeoutError:
            raise StageTimeout(f"rollout engine: {method} did not answer within {self.timeout_s:g}s "
                               f"(run.call_timeout_s)") from None
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


def _outcome(calls, ref, expected: str | None):
    """None when the engine took the weights and its digest matches; else what went wrong (EngineDied for a
    dead engine, which the group replaces; any other exception fails the push)."""
    try:
        digest = calls.result(ref)
    except EngineDied as exc:
        return exc
    except Exception as exc:  # the transfer broke (e.g. a peer died mid-broadcast)
        return exc
    if expected is not None and digest != expected:
        return RuntimeError(f"weight digest {digest} != the learner's {expected}: the engine did not get every byte")
    return None


class BusSource:
    """The learner's current weights, streamed by learner rank 0 straight into the engines' workers
    (`rollout.weight_transfer`): the driver passes only the layout and the rendezvous address."""

    def __init__(self, learners, layout, timeout_s: float, workers_per_engine: int = 1) -> None:
        self.learners, self.layout, self.timeout_s = learners, layout, timeout_s
        self.per_engine = workers_per_engine  # tensor-parallel shards: each receives the full weights
        self.wire = layout.to_wire()
        self.mb = layout.total_bytes / 2**20

    def deliver(self, engines: list, calls) -> tuple[list, int | None]:
        refs: list = []

        def start_receivers(address) -> None:
            refs.extend(calls.submit(e, "receive_weights", asdict(address), 1 + i * self.per_engine, self.wire)
                        for i, e in enumerate(engines))

        try:
            digest, version = self.learners.stream(len(engines) * self.per_engine, self.layout, start_receivers,
                                                   self.timeout_s)
            error = None
        except Exception as exc:
            digest, version, error = None, None, exc
        outcomes = [_outcome(calls, r, digest) for r in refs]
        if error is not None:
            if not any(isinstance(o, EngineDied) for o in outcomes):
                raise RuntimeError(f"weight transfer failed on the learner side: {error}") from error
            return outcomes, None
        for e, o in zip(engines, outcomes):
            if o is None:
                calls.result(calls.submit(e, "set_version", version))
        return outcomes, version


class BytesSource:
    """The fallback: the state as safetensors blobs, each below the RPC message limit, put once into the object
    store and loaded by every engine (the driver holds the whole state: a hub, kept for debugging)."""

    def __init__(self, blobs: list[bytes], version: int) -> None:
        from rollout.weight_sync import blobs_digest

        self.blobs, self.version, self.ref = blobs, version, None
        self.digest, self.mb = blobs_digest(blobs), sum(map(len, blobs)) / 2**20

    def deliver(self, engines: list, calls) -> tuple[list, int]:
        if self.ref is None:
            self.ref, self.blobs = calls.put(self.blobs), None
        refs = [calls.submit(e, "load_weights", self.ref, self.version) for e in engines]
        return [_outcome(calls, r, self.digest) for r in refs], self.version


class EngineGroup:
    def __init__(self, spawn: Callable[[], Any], count: int, calls: RayCalls | LocalCalls,
                 max_attempts: int = 3) -> None:
        self.spawn, self.calls, self.max_attempts = spawn, calls, max_attempts
        self.lock = threading.Lock()  # the producer thread generates while the driver pushes weights
        self.engines = [spawn() for _ in range(count)]
        for e in self.engines:  # fail fast if an engine cannot start
            calls.result(calls.submit(e, "get_version"))
        self.source = None  # where the newest weights come from (BusSource/BytesSource), for engines started later
        self.version = 0
        self.restarts = 0
        self.closed = False  # once closed, a dead engine is not replaced (the run is ending)

    @classmethod
    def on_ray(cls, model_path: str, rollout, dtype: str, seed: int, timeout_s: float | None = None) -> EngineGroup:
        """`rollout.engines` vLLM engine actors, each with `rollout.cpus_per_engine`/`gpus_per_engine`."""
        import ray

        from rollout.engine import RolloutEngine

        actor = ray.remote(RolloutEngine).options(num_cpus=rollout.cpus_per_engine,
                                                  num_gpus=rollout.gpus_per_engine, max_restarts=0)
        return cls(lambda: actor.remote(model_path, rollout, dtype, seed), rollout.engines, RayCalls(timeout_s))

    def _replace(self, idx: int, dead) -> None:
        """A new engine in place of `dead`, serving only once it holds the newest weights."""
        with self.lock:
            if self.closed:
                raise EngineDied("the engine group is closed")
            if self.engines[idx] is not dead:  # another caller replaced it already
                return
            log.warning("rollout engine %d died; starting a new one", idx)
            self._kill_quietly(idx, dead)
            engine = self.spawn()
            if self.source is not None:
                (problem,), version = self.source.deliver([engine], self.calls)
                if problem is not None:
                    self.calls.kill(engine)
                    raise problem if isinstance(problem, EngineDied) else EngineDied(f"replacement: {problem}")
                log.warning("rollout engine %d replaced; it holds policy version %s", idx, version)
            self.engines[idx] = engine
            self.restarts += 1

    def _kill_quietly(self, idx: int, engine) -> None:
        # An unreachable actor (Ray's ActorUnavailableError is a RayActorError too) may still hold its CPUs or GPU;
        # kill it so a replacement can be placed.
        try:
            self.calls.kill(engine)
        except Exception as exc:  # already gone
            log.debug("killing dead engine %d: %s", idx, exc)

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

    def push(self, source) -> dict:
        """Load the source's weights into every engine; an engine that dies meanwhile is replaced and the whole
        transfer runs again (the others may hold half of it). A replacement joins the group only once the
        transfer succeeded: until then nothing can generate on it with the starting weights. Returns the version
        loaded and the MB sent."""
        with self.lock:
            self.source = source
            engines = list(self.engines)
        originals = list(engines)
        for attempt in range(1, self.max_attempts + 1):
            outcomes, version = source.deliver(engines, self.calls)
            failed = [(i, o) for i, o in enumerate(outcomes) if o is not None]
            if not failed:
                self._install(originals, engines)
                with self.lock:
                    self.version = version
                return {"version": version, "sync_mb": source.mb}
            dead = [i for i, o in failed if isinstance(o, EngineDied)]
            if not dead:
                self._discard(originals, engines)
                i, problem = failed[0]
                raise RuntimeError(f"weight sync: rollout engine {i} failed to load the weights: {problem}") from problem
            for i in dead:
                log.warning("rollout engine %d died during the weight sync; starting a new one", i)
                self._kill_quietly(i, engines[i])
                engines[i] = self.spawn()  # private to this push until the transfer succeeds
        self._discard(originals, engines)
        raise RuntimeError(f"weight sync: engines kept dying, {self.max_attempts} attempts")

    def _install(self, originals: list, engines: list) -> None:
        with self.lock:
            for i, (old, new) in enumerate(zip(originals, engines)):
                if new is old:
                    continue
                if self.engines[i] is old:
                    self.engines[i] = new
                    self.restarts += 1
                else:  # generate replaced it meanwhile (with these weights too): keep that one
                    self._kill_quietly(i, new)

    def _discard(self, originals: list, engines: list) -> None:
        for i, (old, new) in enumerate(zip(originals, engines)):
            if new is not old:
                self._kill_quietly(i, new)

    def probe(self, token_ids: list[int]) -> list[list[float]]:
        """Every engine's logprob of each token of `token_ids` given the ones before (one list per engine)."""
        return [self._probe_one(i, token_ids) for i in range(len(self.engines))]

    def _probe_one(self, idx: int, token_ids: list[int]) -> list[float]:
        for attempt in range(self.max_attempts):
            engine = self._engine(idx)
            try:
                return self.calls.result(self.calls.submit(engine, "probe_logprobs", token_ids))
            except EngineDied:
                if attempt == self.max_attempts - 1:
                    raise
                self._replace(idx, engine)
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self.lock:
            self.closed = True
            engines = list(self.engines)
        for e in engines:
            self.calls.kill(e)
