"""The producer: turns training steps into scored batches, ahead of the learner within the staleness bound.

The driver calls two things:
    next_batch(step) -> StepRollout   the step's scored completions (blocks until they are ready)
    allow(version)                    the engines now hold policy `version`: steps up to version + staleness
                                      may generate

Inside, one generator thread walks the steps in order. Step s generates only once the engines hold version
>= s - staleness (staleness 0: each step samples from the weights the previous step trained, and the run is
reproducible because every sampling seed is a function of (seed, step, position)). Generated chunks go to a
scoring thread at once, so the sandbox scores chunk i (and step s) while the engines generate chunk i+1 (and
step s+1): the step costs about the slower of the two, not their sum.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from rewards.types import Task
from rollout.config import RolloutConfig
from rollout.curriculum import curriculum_order, step_counts, tier_of, tier_weights, visible_counts
from rollout.revision import attempt_record, feedback_text, join_attempt, needs_revision, trajectory_result
from rollout.stats import informative
from rollout.types import Completion, Request, ScoredCompletion, group_by_key

Scorer = Callable[[list[tuple[Task, str]]], list]  # rewards: (task, completion text) -> ScoredSample, in order


REVISION_COUNTS = ("revision_requests", "revision_context_full", "revision_unscored")  # rollout.turns > 1


def prompt_order(num_tasks: int, step: int, prompts_per_step: int, seed: int) -> list[int]:
    """Task indices for `step`: epochs are seeded permutations, concatenated. A pure function of the step, so
    a resumed run sees exactly the prompts the uninterrupted run would have seen."""
    out = []
    for pos in range(step * prompts_per_step, (step + 1) * prompts_per_step):
        epoch, offset = divmod(pos, num_tasks)
        out.append(int(np.random.default_rng([seed, epoch]).permutation(num_tasks)[offset]))
    return out


def refill_order(num_tasks: int, step: int, round_: int, count: int, seed: int) -> list[int]:
    """Extra prompts of dynamic sampling's refill round `round_` (>= 1) of `step`: a seeded draw of its own,
    so refills never consume the prompts of later steps and a resumed run draws the same ones."""
    rng = np.random.default_rng([seed, step, round_, 7919])
    return [int(i) for i in rng.integers(num_tasks, size=count)]


def sample_seed(*parts: int) -> int:
    return int(np.random.default_rng(list(parts)).integers(2**31 - 1))


@dataclass
class StepRollout:
    step: int
    batch: list[ScoredCompletion]  # what the learner trains on (whole groups)
    generated: list[ScoredCompletion]  # everything sampled for the step (= batch unless dynamic sampling)
    stats: dict = field(default_factory=dict)


@dataclass
class _Pending:
    futures: list[Future]
    stats: dict


class Producer:
    def __init__(self, engines, scorer: Scorer, tasks: list[Task], rollout: RolloutConfig, seed: int,
                 staleness: int) -> None:
        self.engines, self.scorer, self.tasks = engines, scorer, tasks
        self.cfg, self.seed, self.staleness = rollout, seed, staleness
        self.cond = threading.Condition()
        self.version = 0
        self.stopped = False
        self.results: dict[int, StepRollout | _Pending | BaseException] = {}
        self.thread: threading.Thread | None = None
        # one scoring thread: chunks are scored in the order they were generated, never two batches racing for
        # the same sandbox slots
        self.scoring = ThreadPoolExecutor(max_workers=1, thread_name_prefix="score")
        self.busy = {"generate_s": 0.0, "score_s": 0.0}  # cumulative training-step work, for utilisation
        self.busy_lock = threading.Lock()
        # rollout.curriculum: {step: {tier: [passes, samples]}} of the steps handed to the driver (checkpointed)
        self.tier_counts: dict[int, dict[int, list[int]]] = {}
        self.tier_by_task = {t.task_id: tier_of(t.tier) for t in tasks}
        self.tasks_by_tier: dict[int, list[int]] = {}
        for i, t in enumerate(tasks):
            self.tasks_by_tier.setdefault(tier_of(t.tier), []).append(i)

    # ---- the driver's interface --------------------------------------------------------------------
    def start(self, first_step: int, last_step: int) -> None:
        self.thread = threading.Thread(target=self._run, args=(first_step, last_step), daemon=True, name="producer")
        self.thread.start()

    def allow(self, version: int) -> None:
        with self.cond:
            self.version = version
            self.cond.notify_all()

    def next_batch(self, step: int) -> StepRollout:
        with self.cond:
            self.cond.wait_for(lambda: step in self.results or self.stopped)
            got = self.results.pop(step, None)
        try:
            if isinstance(got, _Pending):  # generated; its scoring may still be running
                scored = self._gather(got.futures, got.stats)
                got = StepRollout(step, scored, scored, got.stats)
        except Exception as exc:
            got = exc
        if isinstance(got, BaseException):
            raise RuntimeError(f"producing step {step} failed: {got!r}") from got
        if got is None:
            raise RuntimeError("the producer was closed")
        if self.cfg.curriculum.enabled:  # before the driver trains it, so before any step that may see it generates
            with self.cond:
                self.tier_counts[step] = step_counts(got.generated, self.tier_by_task)
        return got

    def curriculum_state(self) -> dict:
        """The pass counts later steps may still use (JSON-ready, for the checkpoint)."""
        with self.cond:
            keep = sorted(self.tier_counts)[-(self.cfg.curriculum.window + self.staleness + 1):]
            return {str(s): {str(t): c for t, c in self.tier_counts[s].items()} for s in keep}

    def restore_curriculum(self, state: dict) -> None:
        with self.cond:
            self.tier_counts = {int(s): {int(t): list(c) for t, c in tiers.items()} for s, tiers in state.items()}

    def rollout(self, tasks: list[Task], keys: list, n: int, seeds: list[int]) -> tuple[list[ScoredCompletion], dict]:
        """Generate `n` completions per task and score them, now (evaluation uses this)."""
        requests = [Request(key, self._prompt(t), n, s) for key, t, s in zip(keys, tasks, seeds)]
        futures, stats = self._attempts(requests, dict(zip(keys, tasks)), training=False)
        return self._gather(futures, stats), stats

    def close(self) -> None:
        with self.cond:
            self.stopped = True
            self.cond.notify_all()
        if self.thread is not None:  # a thread inside a generate call ends when its engines are closed
            self.thread.join(timeout=5)
        self.scoring.shutdown(wait=False, cancel_futures=True)

    # ---- inside --------------------------------------------------------------------------------------
    def _prompt(self, task: Task) -> str:
        return task.prompt.rstrip() if self.cfg.strip_prompt else task.prompt

    def _run(self, first_step: int, last_step: int) -> None:
        for step in range(first_step, last_step):
            with self.cond:
                self.cond.wait_for(lambda: self.stopped or self.version >= step - self.staleness)
                if self.stopped:
                    return
            try:
                result = self._produce(step)
            except BaseException as exc:  # surfaced by next_batch, in the driver's thread
                result = exc
            with self.cond:
                self.results[step] = result
                self.cond.notify_all()
            if isinstance(result, BaseException):
                return

    def _produce(self, step: int) -> StepRollout | _Pending:
        c = self.cfg
        idx, weights = self._order(step)
        futures, stats = self._submit_step(step, idx, first_position=0)
        stats.update(weights)
        if not c.dynamic_sampling.enabled:
            # scoring goes on in the scoring thread; next_batch waits for it, this thread generates the next step
            return _Pending(futures, stats)
        generated = self._gather(futures, stats)  # a refill needs this step's rewards first
        return self._refill(step, generated, stats)

    def _order(self, step: int) -> tuple[list[int], dict]:
        """The step's task indices: seeded epochs, or (rollout.curriculum) tier weights from the pass counts the
        step may see; with the weights as metrics."""
        c = self.cfg
        if not c.curriculum.enabled:
            return prompt_order(len(self.tasks), step, c.prompts_per_step, self.seed), {}
        with self.cond:
            counts = visible_counts(self.tier_counts, step, self.staleness, c.curriculum.window)
        tiers = sorted(self.tasks_by_tier)
        weights = tier_weights(tiers, counts, c.curriculum.floor)
        idx = curriculum_order(self.tasks_by_tier, weights, step, c.prompts_per_step, self.seed)
        return idx, {f"curriculum_weight_tier{t}": w for t, w in zip(tiers, weights)}

    def _refill(self, step: int, generated: list[ScoredCompletion], stats: dict) -> StepRollout:
        """Dynamic sampling: fresh prompts until `prompts_per_step` groups have a reward spread, at most
        `max_rounds` extra rounds; the batch is the first `prompts_per_step` informative groups."""
        c, ds = self.cfg, self.cfg.dynamic_sampling
        position, rounds, extra = c.prompts_per_step, 0, 0
        while rounds < ds.max_rounds:
            missing = c.prompts_per_step - sum(informative(g) for g in group_by_key(generated).values())
            if missing <= 0:
                break
            rounds += 1
            count = math.ceil(missing * ds.oversample)
            idx = refill_order(len(self.tasks), step, rounds, count, self.seed)
            futures, more = self._submit_step(step, idx, first_position=position)
            generated += self._gather(futures, more)
            for k in ("time_generate_s", "time_score_s", "gen_tokens", *REVISION_COUNTS):
                if k in more:
                    stats[k] = stats.get(k, 0) + more[k]
            position += count
            extra += count
        _throughput(stats)
        groups = group_by_key(generated)
        kept = [g for g in groups.values() if informative(g)][: c.prompts_per_step]
        stats.update(dynamic_rounds=rounds, dynamic_extra_prompts=extra, dynamic_groups_kept=len(kept),
                     dynamic_groups_generated=len(groups))
        return StepRollout(step, [s for g in kept for s in g], generated, stats)

    def _submit_step(self, step: int, idx: list[int], first_position: int) -> tuple[list[Future], dict]:
        keys = [(step, first_position + j) for j in range(len(idx))]
        seeds = [sample_seed(self.seed, step, first_position + j) for j in range(len(idx))]
        tasks = [self.tasks[i] for i in idx]
        requests = [Request(k, self._prompt(t), self.cfg.samples_per_prompt, s) for k, t, s in zip(keys, tasks, seeds)]
        return self._attempts(requests, dict(zip(keys, tasks)))

    def _attempts(self, requests: list[Request], task_of: dict, training: bool = True) -> tuple[list[Future], dict]:
        """One attempt per completion (rollout.turns = 1), or up to `turns` with feedback in between."""
        if self.cfg.turns == 1:
            return self._generate(requests, task_of, training)
        done: Future = Future()
        stats: dict = {}
        try:
            done.set_result(self._revise(requests, task_of, training, stats))
        except BaseException as exc:  # raised where the driver gathers, as a failed chunk's would be
            done.set_exception(exc)
        return [done], stats

    def _revise(self, requests: list[Request], task_of: dict, training: bool, stats: dict) -> list[ScoredCompletion]:
        """Multi-turn revision (rollout/revision.py): every failing attempt gets its feedback and another try, as
        one more generation round over all the still-failing trajectories of these requests, until they pass,
        the turns run out or the context is full. Rounds run one after another (each needs the last one's
        verdicts); within a round generation and scoring still overlap chunk by chunk."""
        futures, first_stats = self._generate(requests, task_of, training)
        firsts = self._gather(futures, first_stats)  # the scoring thread adds its time to first_stats
        stats.update(first_stats)
        seed_of = {q.key: q.seed for q in requests}
        state = {s.completion.ident: (s.completion, s, [], task_of[s.key]) for s in firsts}  # trajectory, last, attempts
        active = list(state)
        stats.update(dict.fromkeys(REVISION_COUNTS, 0))
        for turn in range(2, self.cfg.turns + 1):
            active = [i for i in active if needs_revision(state[i][1])]
            if not active:
                break
            asks, task_of_ask = [], {}
            for ident in active:
                trajectory, last, attempts, task = state[ident]
                feedback = feedback_text(last, task, self._prompt(task))
                attempts.append(attempt_record(last, turn - 1, feedback))
                key = (ident[0], ident[1], turn)
                asks.append(Request(key, feedback, 1, sample_seed(seed_of[ident[0]], ident[1], turn),
                                    prefix_ids=trajectory.prompt_ids + trajectory.completion_ids))
                task_of_ask[key] = task
            stats["revision_requests"] += len(asks)
            round_futures, round_stats = self._generate(asks, task_of_ask, training)
            revised = self._gather(round_futures, round_stats)
            for k in ("time_generate_s", "time_score_s", "gen_tokens"):
                stats[k] += round_stats[k]
            answered = []
            for s in revised:
                ident = (s.key[0], s.key[1])
                trajectory, last, attempts, task = state[ident]
                if s.completion.finish_reason == "context" or s.reward is None:
                    # no room for another attempt, or the sandbox could not score it: the last scored attempt
                    # stands (its record is written again below, without the feedback it never saw answered)
                    attempts.pop()
                    stats["revision_context_full" if s.completion.finish_reason == "context" else
                          "revision_unscored"] += 1
                    continue
                state[ident] = (join_attempt(trajectory, s.completion), s, attempts, task)
                answered.append(ident)
            active = answered
        _throughput(stats)
        out = []
        for first in firsts:
            trajectory, last, attempts, _ = state[first.completion.ident]
            attempts.append(attempt_record(last, len(attempts) + 1, ""))
            out.append(trajectory_result(first, trajectory, last, attempts, self.cfg.turn_discount))
        return out

    def _generate(self, requests: list[Request], task_of: dict, training: bool = True) -> tuple[list[Future], dict]:
        """Generate in chunks; each chunk goes to the scoring thread as soon as it exists. `training`: count the
        work in `busy` (evaluation is not part of a step's utilisation)."""
        size = self.cfg.chunk_prompts or len(requests) or 1
        stats = {"time_generate_s": 0.0, "time_score_s": 0.0, "gen_tokens": 0}
        futures = []
        for i in range(0, len(requests), size):
            if self.stopped:
                raise RuntimeError("the producer was closed")
            t0 = time.perf_counter()
            completions = self.engines.generate(requests[i : i + size])
            dt = time.perf_counter() - t0
            self._count("generate_s", dt, training)
            stats["time_generate_s"] += dt
            stats["gen_tokens"] += sum(len(x.completion_ids) for x in completions)
            futures.append(self.scoring.submit(self._score, completions, task_of, stats, training))
        return futures, stats

    def _count(self, resource: str, seconds: float, training: bool) -> None:
        if training:
            with self.busy_lock:
                self.busy[resource] += seconds

    def _score(self, completions: list[Completion], task_of: dict, stats: dict,
               training: bool) -> list[ScoredCompletion]:
        t0 = time.perf_counter()
        scored = self.scorer([(task_of[x.key], x.text) for x in completions])
        if len(scored) != len(completions):
            raise RuntimeError(f"the scorer returned {len(scored)} results for {len(completions)} completions")
        dt = time.perf_counter() - t0
        self._count("score_s", dt, training)
        stats["time_score_s"] += dt
        return [ScoredCompletion.of(x, s) for x, s in zip(completions, scored)]

    @staticmethod
    def _gather(futures: list[Future], stats: dict) -> list[ScoredCompletion]:
        out = [s for f in futures for s in f.result()]
        _throughput(stats)
        return out


def _throughput(stats: dict) -> None:
    stats["gen_tokens_per_s"] = stats["gen_tokens"] / max(stats["time_generate_s"], 1e-9)
