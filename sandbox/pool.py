"""SandboxPool: a pool of long-lived jails that compiles and runs batches of jobs.

Speed comes from doing less work, never from weaker isolation:
- identical jobs in a batch run once (`dedupe`); jobs that share sources compile once, the others run
  the cached binary (compile once, run many);
- a host-side content-hash cache of compiled binaries (and of compile errors) spans batches;
- bits/stdc++.h is precompiled in the jail image, used when a job's flags match.
Binaries are read back from the jail right after compiling, before any untrusted code has run.

Infrastructure failures (a jail that dies, hangs or answers garbage) restart that worker and put the
job back at the front of the queue for the next free worker; after `max_retries` the job's verdict is
SANDBOX_ERROR. A program cannot cause SANDBOX_ERROR by misbehaving: that is what the runner contains. When
the runner answers but cannot clean up after a job in bounded time (a tree too large to remove), the job
keeps its own verdict and only the worker is replaced.

Only what the program alone decides is cached: a binary, or a compile error the compiler reported well
inside its limits. A compile that hit a time limit (under load, say) is judged but never reused.

Every worker is started, restarted and served by one long-lived thread of the pool: bubblewrap's
--die-with-parent is tied to the thread that started the jail, and the caller's thread may end at any time
(CppReward starts its pool lazily in whichever thread scores first).
"""

from __future__ import annotations

import base64
import collections
import logging
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace

from sandbox import bwrap_backend, docker_backend
from sandbox.config import SandboxConfig
from sandbox.judge import compile_is_deterministic, judge_compile, judge_job
from sandbox.sanitizer import runtime_env
from sandbox.runner import OWN_WIPE_S
from sandbox.types import ExecResult, Job, Result, Verdict
from sandbox.worker import Worker, WorkerError

log = logging.getLogger(__name__)

BACKENDS = {
    "docker": (docker_backend.prepare, docker_backend.DockerWorker),
    "bwrap": (bwrap_backend.prepare, bwrap_backend.BwrapWorker),
}


@dataclass
class _Compiled:
    """What a compile produced: a binary, or the compile error (both are cached)."""

    compile: ExecResult
    binary_b64: str | None
    deterministic: bool = True  # False: judged, never cached (see compile_is_deterministic)


class _BinaryCache:
    """LRU of compile outcomes keyed by Job.compile_key, bounded by total binary bytes."""

    def __init__(self, max_bytes: int) -> None:
        self._max = max_bytes
        self._items: collections.OrderedDict[str, _Compiled] = collections.OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> _Compiled | None:
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
            return item

    def put(self, key: str, item: _Compiled) -> None:
        size = len(item.binary_b64 or "") + 1
        if size > self._max:
            return
        with self._lock:
            if key in self._items:
                return
            self._items[key] = item
            self._bytes += size
            while self._bytes > self._max:
                _, old = self._items.popitem(last=False)
                self._bytes -= len(old.binary_b64 or "") + 1


@dataclass
class _Task:
    job: Job
    binary_b64: str | None  # None: compile in the jail
    on_done: Callable[[Result, _Compiled | None], None]
    attempts: int = 0


@dataclass
class PoolStats:
    jobs: int = 0
    executed: int = 0  # jobs sent to a worker
    deduplicated: int = 0
    compiles: int = 0
    compile_cache_hits: int = 0
    retries: int = 0
    sandbox_errors: int = 0
    worker_restarts: int = 0
    unclean_restarts: int = 0  # workers replaced after a job whose verdict stood (cleanup did not finish)
    seconds_busy: float = 0.0
    extra: dict = field(default_factory=dict)


class SandboxPool:
    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config or SandboxConfig()
        self.pool_id = uuid.uuid4().hex[:8]
        self.stats = PoolStats()
        self._cache = _BinaryCache(self.config.cache_mb << 20)
        self._queue: collections.deque[_Task | None] = collections.deque()
        self._cv = threading.Condition()
        self._workers: list[Worker] = []
        self._threads: list[threading.Thread] = []
        self._stats_lock = threading.Lock()
        self._closed = False

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> "SandboxPool":
        prepare, worker_cls = BACKENDS[self.config.backend]
        prepared = prepare(self.config)
        uid_base = bwrap_backend.new_uid_base(self.config.num_workers)
        self._workers = [
            worker_cls(self.config, prepared, uid_base + i, self.pool_id, i)
            for i in range(self.config.num_workers)
        ]
        started = [threading.Event() for _ in self._workers]
        errors: list[BaseException | None] = [None] * len(self._workers)
        for i, worker in enumerate(self._workers):
            thread = threading.Thread(target=self._own, args=(worker, started[i], errors, i),
                                      name=worker.name, daemon=True)
            thread.start()
            self._threads.append(thread)
        for event in started:
            event.wait()
        failed = [e for e in errors if e is not None]
        if failed:
            self.close()
            raise failed[0]
        return self

    def _own(self, worker: Worker, started: threading.Event, errors: list, i: int) -> None:
        """The thread that owns `worker` for the pool's lifetime: starts it, then serves jobs on it."""
        try:
            worker.start()
        except BaseException as exc:  # noqa: BLE001 - handed to start(), which raises it
            errors[i] = exc
            return
        finally:
            started.set()
        self._serve(worker)

    def close(self) -> None:
        with self._cv:
            if self._closed:
                return
            self._closed = True
            self._queue.extend([None] * len(self._threads))
            self._cv.notify_all()
        for thread in self._threads:
            thread.join(timeout=60)
        for worker in self._workers:
            worker.close()

    def __enter__(self) -> "SandboxPool":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def workers(self) -> list[Worker]:
        return list(self._workers)

    # ------------------------------------------------------------------ public API

    def run(self, job: Job) -> Result:
        return self.run_batch([job])[0]

    def run_batch(self, jobs: Sequence[Job], progress: bool = False) -> list[Result]:
        """Results in input order. Blocks until every job has a result."""
        if self._closed or not self._threads:
            raise RuntimeError("SandboxPool is not running: use `with SandboxPool(cfg) as pool:`")
        if not jobs:  # nothing would ever set `done` below
            return []
        results: list[Result | None] = [None] * len(jobs)
        groups: dict[str, list[int]] = collections.defaultdict(list)
        for i, job in enumerate(jobs):
            groups[job.run_key() if self.config.dedupe else str(i)].append(i)
        by_compile: dict[str, list[list[int]]] = collections.defaultdict(list)
        for indices in groups.values():
            by_compile[jobs[indices[0]].compile_key() if self.config.dedupe else str(indices[0])].append(indices)
        pending = [len(groups)]
        done = threading.Event()
        bar = _progress(len(jobs), progress)
        lock = threading.Lock()

        def finish(indices: list[int], result: Result) -> None:
            for n, i in enumerate(indices):
                results[i] = result if n == 0 else replace(result, deduplicated=True)
            with lock:
                pending[0] -= 1
                if bar:
                    bar.update(len(indices))
                if pending[0] == 0:
                    done.set()

        with self._stats_lock:
            self.stats.jobs += len(jobs)
            self.stats.deduplicated += len(jobs) - len(groups)
        for key, members in by_compile.items():
            self._schedule_group(jobs, key, members, finish)
        done.wait()
        if bar:
            bar.close()
        return results  # type: ignore[return-value]

    # ------------------------------------------------------------------ scheduling

    def _schedule_group(self, jobs: Sequence[Job], key: str, members: list[list[int]], finish) -> None:
        """Jobs sharing one compile: the first compiles (unless cached), the rest reuse its binary."""
        cached = self._cache.get(key) if self.config.dedupe else None
        if cached is not None:
            with self._stats_lock:
                self.stats.compile_cache_hits += len(members)
            for indices in members:
                self._dispatch_with(jobs[indices[0]], cached, indices, finish)
            return
        lead, followers = members[0], members[1:]

        def on_lead_done(result: Result, compiled: _Compiled | None) -> None:
            finish(lead, result)
            if compiled is not None and compiled.deterministic and self.config.dedupe:
                self._cache.put(key, compiled)
            for indices in followers:
                if compiled is None:  # the lead hit an infrastructure failure: compile independently
                    self._submit(_Task(jobs[indices[0]], None, lambda r, _c, ix=indices: finish(ix, r)))
                else:
                    self._dispatch_with(jobs[indices[0]], compiled, indices, finish)

        self._submit(_Task(jobs[lead[0]], None, on_lead_done))

    def _dispatch_with(self, job: Job, compiled: _Compiled, indices: list[int], finish) -> None:
        if compiled.compile.verdict is not Verdict.OK:
            finish(indices, Result(Verdict.COMPILE_ERROR, compile=compiled.compile, compile_cached=True,
                                   tests_total=len(job.tests)))
        elif compiled.binary_b64 is None:  # too large to cache: compile again
            self._submit(_Task(job, None, lambda r, _c: finish(indices, r)))
        else:
            def done(result: Result, _c) -> None:
                finish(indices, replace(result, compile=compiled.compile, compile_cached=True))

            self._submit(_Task(job, compiled.binary_b64, done))

    def _submit(self, task: _Task, front: bool = False) -> None:
        with self._cv:
            if front:
                self._queue.appendleft(task)
            else:
                self._queue.append(task)
            self._cv.notify()

    # ------------------------------------------------------------------ workers

    def _serve(self, worker: Worker) -> None:
        while True:
            with self._cv:
                while not self._queue:
                    self._cv.wait()
                task = self._queue.popleft()
            if task is None:
                return
            try:
                self._execute(worker, task)
            except Exception as exc:  # noqa: BLE001 - a dead worker thread would hang every batch
                log.exception("sandbox worker thread %s: unexpected error", worker.name)
                task.on_done(Result(Verdict.SANDBOX_ERROR, attempts=task.attempts, error=repr(exc),
                                    tests_total=len(task.job.tests)), None)

    def _execute(self, worker: Worker, task: _Task) -> None:
        job = task.job
        payload = {
            "id": uuid.uuid4().hex, "files": job.files, "flags": list(job.build_flags),
            "sanitizer_env": runtime_env(job.run_limits) if job.sanitize else None,
            "binary_b64": task.binary_b64, "return_binary": task.binary_b64 is None and self.config.dedupe,
            "compile_limits": asdict(job.compile_limits), "run_limits": asdict(job.run_limits),
            "runs": [{"stdin_b64": base64.b64encode(t.stdin).decode(), "args": list(t.args)} for t in job.tests],
            "stop_on_failure": job.stop_on_failure, "private_units": list(job.private_units),
        }
        budget = self.reply_budget(job, compile=task.binary_b64 is None)
        task.attempts += 1
        started = time.monotonic()
        try:
            reply = worker.request(payload, budget)
            if reply.get("id") != payload["id"]:
                raise WorkerError(f"{worker.name}: reply for another request")
        except WorkerError as exc:
            self._on_worker_failure(worker, task, exc)
            return
        compiled = None
        compile_result = None
        try:
            if reply.get("compile") is not None:
                compile_result = judge_compile(reply["compile"])
                compiled = _Compiled(compile_result, reply.get("binary_b64"),
                                     compile_is_deterministic(reply["compile"], job.compile_limits))
            result = judge_job(job, reply, compile_result)
        except (KeyError, TypeError, ValueError) as exc:  # a reply we cannot interpret is the jail's fault
            self._on_worker_failure(worker, task, WorkerError(f"{worker.name}: bad reply: {exc!r}"))
            return
        result.attempts = task.attempts
        with self._stats_lock:
            self.stats.executed += 1
            self.stats.compiles += compile_result is not None
            self.stats.seconds_busy += time.monotonic() - started
        task.on_done(result, compiled)
        if not reply.get("clean", False):  # the verdict stands; the worker is replaced
            log.warning("sandbox worker %s not clean after a job; replacing it", worker.name)
            with self._stats_lock:
                self.stats.unclean_restarts += 1
            self._restart(worker)

    def reply_budget(self, job: Job, compile: bool) -> float:
        """How long a runner may take to answer: the job's own wall limits, a cleanup deadline before and
        after each stage, and a margin. Past it the worker counts as hung."""
        # A build with private units is up to four processes (compile, nm, objcopy, link), each limited.
        compiles = (4 if job.private_units else 1) if compile else 0
        stages = len(job.tests) + compiles
        budget = len(job.tests) * job.run_limits.wall_s + compiles * job.compile_limits.wall_s
        return budget + (stages + 2) * (self.config.wipe_timeout_s + OWN_WIPE_S) + self.config.reply_margin_s

    def _on_worker_failure(self, worker: Worker, task: _Task, exc: WorkerError) -> None:
        log.warning("sandbox worker %s failed (%s); restarting", worker.name, exc)
        worker.close()
        with self._stats_lock:
            self.stats.worker_restarts += 1
        if task.attempts <= self.config.max_retries:
            with self._stats_lock:
                self.stats.retries += 1
            self._submit(task, front=True)  # an idle worker takes it while this one restarts
        else:
            with self._stats_lock:
                self.stats.sandbox_errors += 1
            task.on_done(Result(Verdict.SANDBOX_ERROR, attempts=task.attempts, error=str(exc),
                                tests_total=len(task.job.tests)), None)
        self._restart(worker, closed=True)

    def _restart(self, worker: Worker, closed: bool = False) -> None:
        if not closed:
            worker.close()
            with self._stats_lock:
                self.stats.worker_restarts += 1
        for attempt in range(5):
            try:
                worker.start()
                return
            except Exception as start_exc:  # noqa: BLE001 - the job is already answered; never raise from here
                log.warning("restarting %s failed (%s)", worker.name, start_exc)
                worker.close()
                time.sleep(min(2.0, 0.2 * 2**attempt))
        log.error("worker %s could not be restarted; it keeps retrying per job", worker.name)


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="sandbox", unit="job", file=sys.stderr, dynamic_ncols=True)
