"""The RLVR driver: tasks -> rollout (vLLM actors) -> sandbox rewards (Ray actor pool) -> GRPO learner ->
weights back to vLLM, with a bounded-staleness pipeline.

A producer thread generates and scores step s as soon as the engines hold policy version >= s - staleness;
the main thread trains on finished steps in order, pushes the new weights, checks the probe and logs.
staleness=0 is fully synchronous (and reproducible: every sampling seed is a function of step and prompt).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from learner import checkpoint
from learner.batch import assign_advantages, prompt_order, reward_stats, shard
from learner.config import RLVRConfig
from rewards.tasks import is_heldout, load_embedded, load_tasks
from rewards.types import Task

log = logging.getLogger("crucible.learner")


class ProbeMismatch(RuntimeError):
    pass


def connect_ray(address: str | None) -> bool:
    """Attach to `address` (or RAY_ADDRESS, or a running local cluster), else start a local instance;
    address="local" always starts a private one. True when this call started it (the caller shuts it down)."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    if ray.is_initialized():
        return False
    if address != "local":
        if address or os.environ.get("RAY_ADDRESS"):  # explicit, or set by `ray job submit`
            ray.init(address=address, log_to_driver=True)
            return False
        try:
            ray.init(address="auto")
            return False
        except ConnectionError:
            pass
    ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False)
    return True


def split_tasks(cfg: RLVRConfig) -> tuple[list[Task], list[Task]]:
    t = cfg.tasks
    tasks = load_embedded() if t.source == "embedded" else load_tasks(t.source)
    if t.tiers is not None:
        tasks = [x for x in tasks if x.tier in t.tiers]
    if not tasks:
        raise ValueError(f"tasks: no tasks in {t.source!r}" + (f" with tiers={t.tiers}" if t.tiers else ""))
    heldout = [x for x in tasks if is_heldout(x.task_id, t.heldout_fraction, t.split_seed)]
    train = [x for x in tasks if not is_heldout(x.task_id, t.heldout_fraction, t.split_seed)]
    if not train:
        raise ValueError("tasks: every task fell in the held-out split; lower tasks.heldout_fraction")
    return train, heldout


def check_resources(cfg: RLVRConfig, cluster: dict) -> None:
    """Fail now, naming the fields, rather than wait forever for actors Ray can never place."""
    r, lc, rw = cfg.rollout, cfg.learner, cfg.reward
    cpus = r.engines * r.cpus_per_engine + lc.world_size * lc.cpus_per_worker + rw.workers * rw.slots_per_worker
    gpus = r.engines * r.gpus_per_engine + lc.world_size * lc.gpus_per_worker
    if cpus > cluster.get("CPU", 0) + 1e-9:
        raise ValueError(f"the run needs {cpus:g} CPUs (rollout.engines x rollout.cpus_per_engine + learner.world_size"
                         f" x learner.cpus_per_worker + reward.workers x reward.slots_per_worker) but the Ray cluster has"
                         f" {cluster.get('CPU', 0):g}; lower them (fractions are allowed) or add nodes")
    if gpus > cluster.get("GPU", 0) + 1e-9:
        raise ValueError(f"the run needs {gpus:g} GPUs (rollout.gpus_per_engine, learner.gpus_per_worker) but the Ray "
                         f"cluster has {cluster.get('GPU', 0):g}")


def resolve_model(path: str) -> str:
    if path == "tiny":
        from learner.tiny_policy import build_tiny_policy

        return str(build_tiny_policy())
    return path


def _seed(*parts: int) -> int:
    return int(np.random.default_rng(list(parts)).integers(2**31 - 1))


class Loop:
    def __init__(self, cfg: RLVRConfig) -> None:
        self.cfg, self.cfgd = cfg, cfg.model_dump()
        self.train_tasks, self.heldout = split_tasks(cfg)  # bad task files fail before heavy imports and Ray
        import ray
        from transformers import AutoTokenizer

        from learner.cluster import EngineGroup, LearnerGroup
        from learner.metrics import MetricsSink
        from rewards.ray_pool import RewardActorPool

        self.ray = ray
        self.engines = self.learners = self.pool = self.sink = None
        self.out = Path(cfg.run.out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.started_ray = connect_ray(cfg.run.ray_address)
        try:  # on failure, close what was built and the Ray this driver started: run() has no loop to close
            check_resources(cfg, ray.cluster_resources())
            self.model_path = resolve_model(cfg.model.path)
            tok = AutoTokenizer.from_pretrained(self.model_path)
            probe_task = (self.heldout or self.train_tasks)[0]
            self.probe_ids = tok(probe_task.prompt + (probe_task.reference or ""))["input_ids"][:256]
            rw = cfg.reward
            self.pool = RewardActorPool(num_workers=rw.workers, slots_per_worker=rw.slots_per_worker,
                                        sandbox={"backend": rw.backend}, reward=rw.weights.model_dump(),
                                        mode=rw.mode, resources=rw.resources or None)
            self.engines = EngineGroup(self.model_path, self.cfgd)
            self.learners = LearnerGroup(self.model_path, self.cfgd)
            self.sink = MetricsSink(self.out, tensorboard=cfg.run.tensorboard,
                                    wandb_project=cfg.run.wandb_project)
        except BaseException:
            self.close()
            raise
        self.version = 0
        self.cond = threading.Condition()
        self.stop = False
        self.seen: set = set()
        self.duplicates = 0
        self.samples_scored = 0

    # ---- rollouts: generate + score -------------------------------------------------------------------
    def rollout(self, tasks: list[Task], keys: list, k: int, seeds: list[int]) -> tuple[list[dict], dict]:
        t0 = time.perf_counter()
        strip = self.cfg.rollout.strip_prompt
        requests = [{"key": key, "prompt": t.prompt.rstrip() if strip else t.prompt, "n": k, "seed": s}
                    for key, t, s in zip(keys, tasks, seeds)]
        samples = self.engines.generate(requests)
        t1 = time.perf_counter()
        by_key = dict(zip(keys, tasks))
        scored = self.pool.score([(by_key[s["key"]], s["text"]) for s in samples])
        for s, r in zip(samples, scored):
            s.update(reward=r.reward, passed=r.passed, verdict=r.verdict, components=r.components)
        t2 = time.perf_counter()
        tokens = sum(len(s["completion_ids"]) for s in samples)
        return samples, {"time_generate_s": t1 - t0, "time_score_s": t2 - t1, "gen_tokens": tokens,
                         "gen_tokens_per_s": tokens / max(t1 - t0, 1e-9)}

    def produce(self, start: int, q: queue.Queue) -> None:
        c = self.cfg
        try:
            for step in range(start, c.run.steps):
                with self.cond:  # bounded staleness: engines must hold version >= step - staleness
                    self.cond.wait_for(lambda: self.stop or self.version >= step - c.run.staleness)
                    if self.stop:
                        return
                idx = prompt_order(len(self.train_tasks), step, c.rollout.prompts_per_step, c.run.seed)
                keys = [(step, pos) for pos in range(len(idx))]
                seeds = [_seed(c.run.seed, step, pos) for pos in range(len(idx))]
                samples, info = self.rollout([self.train_tasks[i] for i in idx], keys, c.rollout.samples_per_prompt, seeds)
                q.put((step, samples, info))
        except BaseException as exc:  # surfaced by the main thread
            q.put((None, exc, None))

    def evaluate(self) -> dict:
        if not self.heldout:
            return {}
        n = self.cfg.run.eval_samples
        keys = [("eval", i) for i in range(len(self.heldout))]
        seeds = [_seed(self.cfg.run.seed, 10**6, i) for i in range(len(self.heldout))]
        samples, _ = self.rollout(self.heldout, keys, n, seeds)
        return reward_stats(samples, prefix="eval_")

    # ---- learner side ------------------------------------------------------------------------------
    def sync(self, version: int) -> dict:
        """Push the learner's weights to vLLM, then require vLLM's probe logprobs to match the learner's."""
        t0 = time.perf_counter()
        before = np.array(self.engines.call_first("probe_logprobs", self.probe_ids))
        state = self.learners.all("export_state")[0]
        mb = self.engines.push(state, version)
        after = np.array(self.engines.call_first("probe_logprobs", self.probe_ids))
        mine = np.array(self.learners.all("probe_logprobs", args=(self.probe_ids,))[0])
        mismatch = float(np.abs(after - mine).mean())
        if mismatch > self.cfg.algo.probe_tolerance:
            raise ProbeMismatch(f"weight sync check failed at policy version {version}: vLLM's probe logprobs differ "
                                f"from the learner's by {mismatch:.4f} on average (algo.probe_tolerance="
                                f"{self.cfg.algo.probe_tolerance}); vLLM is not running the trained weights")
        self.last_state = state
        return {"time_sync_s": time.perf_counter() - t0, "probe_mismatch": mismatch,
                "probe_shift": float(np.abs(after - before).mean()), "sync_mb": mb}

    def train_step(self, step: int, samples: list[dict]) -> dict:
        a, c = self.cfg.algo, self.cfg
        for s in samples:  # every sample is counted exactly once
            ident = (s["key"], s["index"])
            self.duplicates += ident in self.seen
            self.seen.add(ident)
        self.samples_scored += len(samples)
        kept, counts = assign_advantages(samples, a.scale_by_std, a.truncation, a.truncation_penalty,
                                         a.filter_equal_rewards)
        t0 = time.perf_counter()
        rec: dict = {**counts, "samples": len(samples), "trained_samples": len(kept)}
        if kept:
            per_rank, tokens, micro = shard(kept, c.learner.world_size, a.micro_batch_size, a.minibatches)
            parts = self.learners.all("train", per_rank, args=(tokens, micro))
            tot = {k: sum(p[k] for p in parts) for k in parts[0]}
            ntok = max(tot["tokens"], 1.0)
            rec.update(loss=tot["loss"], grad_norm=parts[0]["grad_norm"], kl=tot["kl_sum"] / ntok,
                       entropy=tot["entropy_sum"] / ntok, clip_fraction=tot["clip_fraction_sum"] / ntok,
                       logprob_mismatch=tot["mismatch_sum"] / ntok, is_weight_mean=tot["is_weight_sum"] / ntok,
                       train_tokens=tot["tokens"])
        dt = time.perf_counter() - t0
        rec.update(time_train_s=dt, train_tokens_per_s=rec.get("train_tokens", 0) / max(dt, 1e-9))
        return rec

    def save(self, step: int, history: dict) -> Path:
        tmp = checkpoint.begin(self.out, step)
        self.learners.all("save", [str(tmp / "learner")] * self.cfg.learner.world_size)
        checkpoint.save_hf_policy(self.last_state, self.model_path, tmp / "policy")
        return checkpoint.commit(tmp, {"step": step, "version": self.version, "history": history,
                                       "samples_scored": self.samples_scored})

    def close(self) -> None:
        for part in (self.engines, self.learners, self.pool, self.sink):
            try:
                if part is not None:
                    part.close()
            except Exception as exc:  # teardown must not hide the run's own result
                log.warning("close failed: %s", exc)
        if self.started_ray:  # a local instance this driver started ends with the run, error or not
            self.ray.shutdown()


def run(cfg: RLVRConfig) -> dict:
    from learner.metrics import read_metrics
    from learner.report import write_report

    t_start = time.perf_counter()
    loop = Loop(cfg)
    try:
        start, history, resumed = 0, {}, None
        ckpt = checkpoint.latest(cfg.run.out_dir) if cfg.run.resume else None
        if ckpt is not None:
            state = checkpoint.read_driver_state(ckpt)
            loop.learners.all("load", [str(ckpt / "learner")] * cfg.learner.world_size)
            start, history, resumed = state["step"], state["history"], state["step"]
            loop.version = state["version"]
        loop.sync(loop.version)  # also the first probe: vLLM must start from the learner's weights
        if "eval_first" not in history:
            history["eval_first"] = loop.evaluate()
        q: queue.Queue = queue.Queue()
        producer = threading.Thread(target=loop.produce, args=(start, q), daemon=True)
        producer.start()
        bar = tqdm(range(start, cfg.run.steps), desc="GRPO", initial=start, total=cfg.run.steps)
        for step in bar:
            t0 = time.perf_counter()
            got, samples, info = q.get()
            if got is None:
                raise samples
            t_wait = time.perf_counter() - t0
            rec = {**reward_stats(samples), **info, "time_wait_rollout_s": t_wait}
            rec["staleness"] = float(np.mean([step - s["version"] for s in samples]))
            rec["truncated_fraction"] = float(np.mean([s["truncated"] for s in samples]))
            rec.update(loop.train_step(step, samples))
            rec.update(loop.sync(step + 1))
            with loop.cond:
                loop.version = step + 1
                loop.cond.notify_all()
            if cfg.run.eval_every and (step + 1) % cfg.run.eval_every == 0 and step + 1 < cfg.run.steps:
                rec.update(loop.evaluate())
            rec.update(time_step_s=time.perf_counter() - t0, version=loop.version,
                       engine_restarts=loop.engines.restarts, sandbox_retries=loop.pool.restarts)
            if step + 1 == cfg.run.steps:
                history["eval_last"] = loop.evaluate()
                rec.update(history["eval_last"])
            loop.sink.log(step, rec)
            bar.set_postfix(reward=f"{rec['reward_mean'] or 0:.2f}", passed=f"{rec['pass_rate'] or 0:.2f}")
            every = cfg.run.checkpoint_every
            if (every and (step + 1) % every == 0) or step + 1 == cfg.run.steps:
                loop.save(step + 1, history)
        nodes = {"driver_node": loop.ray.get_runtime_context().get_node_id(),
                 "reward_worker_nodes": sorted(set(loop.ray.get([w.node_id.remote() for w in loop.pool.workers])))}
        final = checkpoint.latest(cfg.run.out_dir)
        records = read_metrics(loop.out / "metrics.jsonl")
        report = write_report(loop.out / "metrics.jsonl", loop.out / "report.html",
                              summary={"config": cfg.model_dump_json()})
        first, last = history.get("eval_first", {}), history.get("eval_last", {})
        return {"checkpoint": str(final / "policy") if final else None, "steps": cfg.run.steps,
                "reward_mean_first": records[0].get("reward_mean") if records else None,
                "reward_mean_last": records[-1].get("reward_mean") if records else None,
                "eval_reward_first": first.get("eval_reward_mean"), "eval_reward_last": last.get("eval_reward_mean"),
                "eval_pass_first": first.get("eval_pass_rate"), "eval_pass_last": last.get("eval_pass_rate"),
                "samples_this_run": loop.samples_scored, "duplicates": loop.duplicates, "resumed_from": resumed,
                "engine_restarts": loop.engines.restarts, "reward_worker_restarts": loop.pool.restarts,
                "report": str(report), "out_dir": str(loop.out), **nodes, "seconds": round(time.perf_counter() - t_start, 1)}
    finally:
        with loop.cond:
            loop.stop = True
            loop.cond.notify_all()
        loop.close()
