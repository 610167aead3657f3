"""The RLVR driver: tasks -> rollout (vLLM engines + sandbox rewards, `rollout.producer`) -> GRPO learner ranks ->
weights back to vLLM, with bounded staleness.

`run` reads top to bottom as the phases of a step. `Trainer` holds the phases; it talks to four parts through
typed methods only: the producer (`next_batch`, `allow`, `rollout`), the engines (`push`, `probe`), the learner
group (`update`, `skip`, `export`, `probe`, `save`, `load`) and the metrics sink. `build` makes the real parts
on Ray; tests hand `Trainer` plain Python fakes behind the same methods.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from learner import checkpoint
from learner.batch import assign_advantages
from configs.base import check_lineage, check_resume, resolve_model_path
from learner.config import RLVRConfig, check_checkpoint, resume_settings, run_name
from learner.task_counts import TaskCounts, count_tasks
from rewards.tasks import TaskFile, load_embedded, load_task_file
from rewards.types import Task
from rollout.dump import parse_policy, rollout_row, select_groups, write_rollouts
from rollout.producer import Producer, StepRollout, sample_seed
from rollout.stats import reward_stats
from rollout.engine_group import BusSource, BytesSource
from rollout.weight_transfer import state_to_blobs

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
        given = address or os.environ.get("RAY_ADDRESS", "")
        if given.startswith(("http://", "https://")):
            # the job API's address (what `ray job submit` and learner.head's env.sh use), not a cluster's
            raise ValueError(f"Ray address {given!r} is a dashboard (job submission) address; a direct run "
                             "needs the cluster's address: run.ray_address=<host>:6379 (`python -m learner.head "
                             "status` prints it as `address`), or submit with `ray job submit -- python -m learner ...`")
        if given:  # explicit, or set by `ray job submit`
            ray.init(address=address, log_to_driver=True)
            return False
        try:
            ray.init(address="auto")
            return False
        except ConnectionError:
            pass
    ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False)
    return True


@dataclass(frozen=True)
class TaskSelection:
    """The run's prompts and held-out tasks, and the counts that say how they were chosen."""

    train: list[Task]
    heldout: list[Task]
    counts: TaskCounts


def split_tasks(cfg: RLVRConfig) -> TaskSelection:
    """(train, held out) by the split every stage shares (configs.base.TaskSplit), after the tier filter."""
    t = cfg.tasks
    task_file = TaskFile(load_embedded()) if t.source == "embedded" else load_task_file(t.source, t.lenient)
    for why in task_file.skipped:
        log.warning("tasks.lenient: skipped %s", why)
    loaded = task_file.tasks
    tasks = loaded if t.tiers is None else [x for x in loaded if x.tier in t.tiers]
    if not tasks:
        raise ValueError(f"tasks: no tasks in {t.source!r}" + (f" with tiers={t.tiers}" if t.tiers else ""))
    train, heldout = t.split.split(tasks)
    if not train:
        raise ValueError("tasks: every task fell in the held-out split; lower tasks.split.heldout_fraction")
    counts = count_tasks(t.source, [x.tier for x in loaded], t.tiers, len(train), len(heldout),
                         cfg.rollout.prompts_per_step, cfg.run.steps, skipped=len(task_file.skipped))
    return TaskSelection(train, heldout, counts)


def check_resources(cfg: RLVRConfig, cluster: dict) -> None:
    """Fail now, naming the fields, rather than wait forever for actors Ray can never place: CPUs, GPUs and every
    custom resource the reward workers ask for (e.g. `sandbox` units a node advertises with
    `ray start --resources='{"sandbox": 16}'`). Every shortfall is reported at once."""
    r, lc, rw = cfg.rollout, cfg.learner, cfg.reward
    cpus = r.engines * r.cpus_per_engine + lc.world_size * lc.cpus_per_worker + rw.workers * rw.reserved_cpus
    gpus = r.engines * r.gpus_per_engine + lc.world_size * lc.gpus_per_worker
    problems = []
    if cpus > cluster.get("CPU", 0) + 1e-9:
        problems.append(f"the run needs {cpus:g} CPUs (rollout.engines x rollout.cpus_per_engine + learner.world_size"
                        f" x learner.cpus_per_worker + reward.workers x reward.cpus_per_worker) but the Ray cluster has"
                        f" {cluster.get('CPU', 0):g}; lower them (fractions are allowed) or add nodes")
    if gpus > cluster.get("GPU", 0) + 1e-9:
        problems.append(f"the run needs {gpus:g} GPUs (rollout.gpus_per_engine, learner.gpus_per_worker) but the Ray "
                        f"cluster has {cluster.get('GPU', 0):g}")
    for name, per_worker in sorted(rw.resources.items()):
        need = rw.workers * per_worker
        if need > cluster.get(name, 0) + 1e-9:
            problems.append(f"the run needs {need:g} {name!r} units (reward.workers x reward.resources.{name}) but the "
                            f"Ray cluster has {cluster.get(name, 0):g}; start nodes with "
                            f"--resources='{{\"{name}\": N}}' or lower them")
    if problems:
        raise ValueError("; ".join(problems))


def resolve_model(cfg: RLVRConfig) -> str:
    if cfg.model.path == "tiny":  # warmed up on this run's training split, never on its held-out tasks
        from learner.tiny_policy import build_tiny_policy

        return str(build_tiny_policy(split=cfg.tasks.split))
    path = resolve_model_path(cfg.model.path)  # a hub id -> its snapshot in the local HF cache, once
    if path != cfg.model.path:  # local directories were checked when the config was validated
        check_checkpoint(path, cfg.tasks.split)
    return path


@dataclass
class Parts:
    """What the trainer talks to. Real: Ray actors (`build`); tests: plain objects with the same methods."""

    producer: Producer
    engines: Any  # push(source) -> {version, sync_mb}, probe(ids) -> logprobs per engine, restarts
    learners: Any  # update, skip, layout, stream, export, probe, save, load, close
    sink: Any  # log(step, record), close
    rewards: Any = None  # the reward pool: restarts, close
    started_ray: bool = False

    def close(self) -> None:
        for part in (self.producer, self.engines, self.learners, self.rewards, self.sink):
            try:
                if part is not None:
                    part.close()
            except Exception as exc:  # teardown must not hide the run's own result
                log.warning("close failed: %s", exc)
        if self.started_ray:  # a local instance this driver started ends with the run, error or not
            import ray

            ray.shutdown()


class Trainer:
    def __init__(self, cfg: RLVRConfig, parts: Parts, tasks: TaskSelection, probe_ids: list[int],
                 model_path: str) -> None:
        self.cfg, self.parts = cfg, parts
        self.producer, self.engines, self.learners = parts.producer, parts.engines, parts.learners
        self.train_tasks, self.heldout, self.task_counts = tasks.train, tasks.heldout, tasks.counts
        self.prompt_of = {t.task_id: t.prompt for t in tasks.train}
        self.probe_ids, self.model_path = probe_ids, model_path
        self.out = Path(cfg.run.out_dir)
        self.version = 0
        self.history: dict = {}
        self.resumed_from: int | None = None
        self.seen: set = set()  # the ledger: a sample trained twice shows in `duplicates` (the tests require 0)
        self.duplicates = 0
        self.samples_scored = 0
        self.keep_rollouts = parse_policy(cfg.run.log_rollouts)
        self.t_start = time.perf_counter()
        self.busy_before = dict(self.producer.busy)

    def __enter__(self) -> Trainer:
        return self

    def __exit__(self, *exc) -> None:
        self.parts.close()

    @property
    def reward_restarts(self) -> int:
        """Reward workers replaced so far (a fake reward scorer has none)."""
        return getattr(self.parts.rewards, "restarts", 0)

    # ---- phases ------------------------------------------------------------------------------------
    def resume(self) -> int:
        """The newest complete checkpoint's learner state and counters; the first step to run."""
        ckpt = checkpoint.resume_point(self.out, self.cfg.run.resume, self.cfg.run.resume_from)
        if ckpt is None:
            return 0
        state = checkpoint.read_driver_state(ckpt)
        self.learners.load(str(ckpt / "learner"), state["version"])
        self.version, self.history, self.resumed_from = state["version"], state["history"], state["step"]
        self.producer.restore_curriculum(self.history.get("curriculum", {}))
        return state["step"]

    def sync(self, version: int) -> dict:
        """Load the learner's weights into every engine, then require each engine's probe logprobs to match the
        learner's: the digests prove the bytes arrived, the probe that vLLM runs them."""
        t0 = time.perf_counter()
        before = np.array(self.engines.probe(self.probe_ids))
        wt = self.cfg.rollout.weight_transfer
        if wt.mode == "stream":
            source = BusSource(self.learners, self.learners.layout(wt.bucket_bytes), wt.timeout_s,
                               self.cfg.rollout.tensor_parallel_size)
        else:
            source = BytesSource(state_to_blobs(self.learners.export(), int(wt.blob_mb * 2**20)), version)
        pushed = self.engines.push(source)
        if pushed["version"] != version:
            raise RuntimeError(f"weight sync: the learner holds policy version {pushed['version']}, the driver "
                               f"expected {version} (a checkpoint and its learner state disagree?)")
        after = np.array(self.engines.probe(self.probe_ids))  # [engines, tokens]
        mine = np.array(self.learners.probe(self.probe_ids))
        per_engine = np.abs(after - mine[None, :]).mean(axis=1)
        worst = int(per_engine.argmax())
        mismatch = float(per_engine[worst])
        if mismatch > self.cfg.algo.probe_tolerance:
            raise ProbeMismatch(f"weight sync check failed at policy version {version}: engine {worst}'s probe "
                                f"logprobs differ from the learner's by {mismatch:.4f} on average (algo.probe_tolerance="
                                f"{self.cfg.algo.probe_tolerance}); vLLM is not running the trained weights")
        self.version = version
        self.producer.allow(version)  # steps up to version + staleness may now generate
        return {"time_sync_s": time.perf_counter() - t0, "probe_mismatch": mismatch,
                "probe_shift": float(np.abs(after - before).mean()), "sync_mb": pushed["sync_mb"]}

    def evaluate(self) -> dict:
        """Held-out tasks, `run.eval_samples` each, seeds fixed per task: comparable across steps."""
        if not self.heldout:
            return {}
        n, seed = self.cfg.run.eval_samples, self.cfg.run.seed
        keys = [("eval", i) for i in range(len(self.heldout))]
        seeds = [sample_seed(seed, 10**6, i) for i in range(len(self.heldout))]
        scored, _ = self.producer.rollout(self.heldout, keys, n, seeds)
        return reward_stats(scored, prefix="eval_")

    def train(self, step: int, rollout: StepRollout) -> tuple[dict, dict]:
        """Advantages per group, then the GRPO update. Returns the step's record and each trained sample's
        advantage by identity (for the rollout dump)."""
        a = self.cfg.algo
        for s in rollout.batch:
            ident = s.completion.ident
            self.duplicates += ident in self.seen
            self.seen.add(ident)
        self.samples_scored += len(rollout.generated)
        samples, counts = assign_advantages(rollout.batch, a.scale_by_std, a.truncation, a.truncation_penalty,
                                            a.filter_equal_rewards)
        rec: dict = {**reward_stats(rollout.generated), **rollout.stats, **counts,
                     "samples": len(rollout.batch), "trained_samples": len(samples),
                     "staleness": float(np.mean([step - s.completion.version for s in rollout.batch]))
                     if rollout.batch else 0.0}
        t0 = time.perf_counter()
        if samples:
            rec.update(self.learners.update(samples))
        else:  # the weights stay, the version moves with the step (sync checks it); and say so
            self.learners.skip()
            log.warning(untrained_warning(step, self.cfg.run.steps, counts))
        dt = time.perf_counter() - t0
        rec.update(time_train_s=dt, train_tokens_per_s=rec.get("train_tokens", 0) / max(dt, 1e-9))
        return rec, {s.ident: s.advantage for s in samples if s.weight > 0}

    def dump(self, step: int, rollout: StepRollout, advantages: dict) -> None:
        if self.keep_rollouts == 0:
            return
        chosen = select_groups(rollout.generated, self.keep_rollouts)
        write_rollouts(self.out, step, [rollout_row(step, s, self.prompt_of.get(s.task_id, ""),
                                                    advantages.get(s.completion.ident)) for s in chosen])

    def log(self, step: int, rec: dict) -> None:
        """Metrics everywhere (jsonl, TensorBoard, Ray gauges); one progress line every run.log_every steps."""
        t_step, busy = rec["time_step_s"], self.producer.busy
        for name in ("generate_s", "score_s"):  # share of the step's wall time each resource worked
            rec[f"util_{name[:-2]}"] = (busy[name] - self.busy_before[name]) / max(t_step, 1e-9)
        self.busy_before = dict(busy)
        rec["util_train"] = rec.get("time_train_s", 0.0) / max(t_step, 1e-9)
        self.parts.sink.log(step, rec)
        every, total = self.cfg.run.log_every, self.cfg.run.steps
        if every and ((step + 1) % every == 0 or step + 1 == total):
            log.info(progress_line(step, total, rec, time.perf_counter() - self.t_start,
                                   step + 1 - (self.resumed_from or 0)))

    def save(self, step: int) -> Path:
        tmp = checkpoint.begin(self.out, step)
        if self.cfg.rollout.curriculum.enabled:
            self.history["curriculum"] = self.producer.curriculum_state()
        self.learners.save(str(tmp / "learner"), str(tmp / "policy"))  # rank 0 writes the HF policy itself
        final = checkpoint.commit(tmp, {"step": step, "version": self.version, "history": self.history,
                                        "samples_scored": self.samples_scored, "settings": resume_settings(self.cfg)})
        for gone in checkpoint.prune(self.out, self.cfg.run.keep_checkpoints):
            log.info("run.keep_checkpoints=%d: removed %s", self.cfg.run.keep_checkpoints, gone)
        return final

    def summary(self, nodes: dict) -> dict:
        from learner.metrics import read_metrics
        from learner.report import write_report

        final = checkpoint.latest(self.out)
        records = read_metrics(self.out / "metrics.jsonl")
        report = write_report(self.out / "metrics.jsonl", self.out / "report.html", title=f"Crucible RLVR run: {run_name(self.cfg)}",
                              summary={"config": self.cfg.model_dump_json()}, rollouts_dir=self.out / "rollouts")
        first, last = self.history.get("eval_first", {}), self.history.get("eval_last", {})
        return {"checkpoint": str(final / "policy") if final else None, "steps": self.cfg.run.steps,
                "steps_trained": steps_trained(records), "tasks": self.task_counts.as_dict(),
                "reward_mean_first": records[0].get("reward_mean") if records else None,
                "reward_mean_last": records[-1].get("reward_mean") if records else None,
                "eval_reward_first": first.get("eval_reward_mean"), "eval_reward_last": last.get("eval_reward_mean"),
                "eval_pass_first": first.get("eval_pass_rate"), "eval_pass_last": last.get("eval_pass_rate"),
                **({"eval_first_try_pass_first": first.get("eval_first_pass_rate"),
                    "eval_first_try_pass_last": last.get("eval_first_pass_rate")} if self.cfg.rollout.turns > 1 else {}),
                "samples_this_run": self.samples_scored, "duplicates": self.duplicates,
                "resumed_from": self.resumed_from, "engine_restarts": self.engines.restarts,
                "reward_worker_restarts": self.reward_restarts, "report": str(report),
                "out_dir": str(self.out), **nodes, "seconds": round(time.perf_counter() - self.t_start, 1)}


def steps_trained(records: list[dict]) -> int:
    """Steps whose batch had samples to train on. A step whose every group was dropped (equal rewards, or fewer
    than two scored samples) runs no update; read from metrics.jsonl, so a resumed run counts the earlier steps."""
    return sum(1 for r in records if r.get("trained_samples", 0) > 0)


def untrained_warning(step: int, total: int, counts: dict) -> str:
    """Why `step` trained on nothing, from assign_advantages' counts."""
    groups, dropped, unscored = counts["groups"], counts["groups_filtered"], counts["unscored"]
    why = ("the batch held no group (dynamic sampling kept none)" if not groups else
           f"all {dropped} groups were dropped (rewards all equal within each group with "
           f"algo.filter_equal_rewards, or fewer than 2 scored samples; {unscored} samples unscored)")
    return f"step {step + 1}/{total} trained on 0 samples: {why}; no gradient step ran, the policy is unchanged"


def progress_line(step: int, total: int, rec: dict, elapsed: float, done_this_run: int) -> str:
    """`step 3/10 | reward 0.41 pass 0.12 compile 0.80 | kl 0.0010 entropy 1.21 | gen 3.1s score 9.0s train
    1.2s sync 0.3s | 12.0s/step ETA 1m24s`: what `ray job logs` and a non-TTY run show."""
    def num(key: str, fmt: str) -> str:
        value = rec.get(key)
        return format(value, fmt) if isinstance(value, (int, float)) else "-"

    left = (total - step - 1) * elapsed / max(done_this_run, 1)
    return (f"step {step + 1}/{total} | reward {num('reward_mean', '.3f')} pass {num('pass_rate', '.2f')} "
            f"compile {num('compile_rate', '.2f')} | kl {num('kl', '.4f')} entropy {num('entropy', '.3f')} | "
            f"gen {num('time_generate_s', '.1f')}s score {num('time_score_s', '.1f')}s "
            f"train {num('time_train_s', '.1f')}s sync {num('time_sync_s', '.1f')}s | "
            f"{num('time_step_s', '.1f')}s/step ETA {int(left // 60)}m{int(left % 60):02d}s")


def checked_resume_point(cfg: RLVRConfig, out: Path) -> tuple[Path | None, list[str]]:
    """The checkpoint the run would continue from, refused (ValueError) when it was trained under other
    settings; with run.resume=force, also the differences to log."""
    start_from = checkpoint.resume_point(out, cfg.run.resume, cfg.run.resume_from)
    if start_from is None:
        return None, []
    recorded = checkpoint.read_driver_state(start_from).get("settings")
    return start_from, check_resume(recorded, resume_settings(cfg), start_from, cfg.run.resume)


def prepare_out_dir(cfg: RLVRConfig) -> Path:
    """The run's directory, checked before anything starts: the split its checkpoints were trained under, the
    settings of the checkpoint it resumes (or the earlier run set aside with run.resume=false); then its record."""
    out = Path(cfg.run.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.run.resume is False and (aside := checkpoint.set_aside(out)) is not None:
        log.warning("run.resume=false: the earlier run's outputs in %s moved to %s", out, aside)
    check_lineage(out, cfg.tasks.split, "tasks.split", own_output=True)  # its checkpoints were trained under the recorded split
    # Resume only what was trained under these settings (the checkpoint records them), before anything starts.
    start_from, diff = checked_resume_point(cfg, out)
    if diff:
        log.warning("run.resume=force: continuing %s under changed settings:\n  %s", start_from, "\n  ".join(diff))
    (out / "config.json").write_text(cfg.model_dump_json(indent=1))  # the run's record, split included
    return out


def dry_run(cfg: RLVRConfig) -> dict:
    """`python -m learner --dry-run`: everything a run checks before it starts, then exit: the tasks load and
    split, the model and its tokenizer load, the output directory's checkpoint matches these settings, and the
    Ray cluster (the one the run would attach to; else this machine) has the CPUs, GPUs and custom resources."""
    from transformers import AutoTokenizer

    tasks = split_tasks(cfg)
    log.info(tasks.counts.line())
    model_path = resolve_model(cfg)
    tok = AutoTokenizer.from_pretrained(model_path)
    start_from, _ = checked_resume_point(cfg, Path(cfg.run.out_dir))
    address = cfg.run.ray_address or os.environ.get("RAY_ADDRESS")
    if address and address != "local":
        connect_ray(cfg.run.ray_address)
        import ray

        cluster, where = ray.cluster_resources(), f"the Ray cluster at {address}"
        ray.shutdown()
    else:  # the run would start a private Ray on this machine: its cores and GPUs
        import torch

        cluster = {"CPU": float(os.cpu_count() or 1), "GPU": float(torch.cuda.device_count())}
        where = "this machine (a private local Ray)"
    check_resources(cfg, cluster)
    return {"dry_run": "ok", "tasks": tasks.counts.as_dict(), "model": model_path, "vocab_size": len(tok),
            "resumes_from": str(start_from) if start_from else None, "resources_checked_against": where,
            "cluster": {k: v for k, v in cluster.items() if k in ("CPU", "GPU") or k in cfg.reward.resources}}


def build(cfg: RLVRConfig) -> tuple[Trainer, Any]:
    """The real parts on Ray. Bad task files fail before Ray and the heavy imports; on any failure what was
    already built (and a Ray this call started) is closed."""
    tasks = split_tasks(cfg)
    import ray
    from transformers import AutoTokenizer

    from learner.cluster import LearnerGroup
    from learner.metrics import MetricsSink
    from rewards.ray_pool import RewardActorPool
    from rollout.engine_group import EngineGroup

    out = prepare_out_dir(cfg)
    parts = Parts(producer=None, engines=None, learners=None, sink=None, started_ray=connect_ray(cfg.run.ray_address))
    try:
        check_resources(cfg, ray.cluster_resources())
        model_path = resolve_model(cfg)
        tok = AutoTokenizer.from_pretrained(model_path)
        probe_task = (tasks.heldout or tasks.train)[0]
        probe_ids = tok(probe_task.prompt + (probe_task.reference or ""))["input_ids"][:256]
        rw = cfg.reward
        parts.rewards = RewardActorPool(num_workers=rw.workers, slots_per_worker=rw.slots_per_worker,
                                        cpus_per_worker=rw.reserved_cpus, sandbox={"backend": rw.backend}, reward=rw.weights.model_dump(),
                                        mode=rw.mode, resources=rw.resources or None,
                                        call_timeout_s=cfg.run.call_timeout_s)
        parts.engines = EngineGroup.on_ray(model_path, cfg.rollout, cfg.model.dtype, cfg.run.seed,
                                           cfg.run.call_timeout_s)
        parts.learners = LearnerGroup(model_path, cfg)
        parts.sink = MetricsSink(out, tensorboard=cfg.run.tensorboard, wandb_project=cfg.run.wandb_project,
                                 run_name=run_name(cfg), config=cfg.model_dump(mode="json"))
        parts.producer = Producer(parts.engines, parts.rewards.score, tasks.train, cfg.rollout, cfg.run.seed,
                                  cfg.run.staleness)
    except BaseException:
        parts.close()
        raise

    def nodes() -> dict:
        return {"driver_node": ray.get_runtime_context().get_node_id(),
                "reward_worker_nodes": sorted(set(ray.get([w.node_id.remote() for w in parts.rewards.workers])))}

    return Trainer(cfg, parts, tasks, probe_ids, model_path), nodes


def run(cfg: RLVRConfig, trainer: Trainer | None = None, nodes=lambda: {}) -> dict:
    if trainer is None:
        trainer, nodes = build(cfg)
    steps, every = cfg.run.steps, cfg.run.checkpoint_every
    with trainer:
        # What the run does with its tasks: how many the tier filter dropped, held out, how often each repeats.
        log.info(trainer.task_counts.line())
        # Resume: learner weights, optimizer, RNG and counters of the newest checkpoint; prompts and seeds are
        # functions of the step, so the resumed run sees what the uninterrupted one would have.
        start = trainer.resume()
        if start >= steps:  # say so, rather than return the old summary as if this call had trained
            log.warning("%s already holds a run of %d steps (run.steps=%d): nothing to train. Raise run.steps to "
                        "continue it, or use another run.out_dir (or run.resume=false) for a new run",
                        trainer.out, start, steps)
        # vLLM starts from the learner's weights (after a resume, the checkpoint's), checked by the probe.
        trainer.sync(trainer.version)
        if "eval_first" not in trainer.history:
            trainer.history["eval_first"] = trainer.evaluate()
        # Generation runs ahead in the producer's thread, at most run.staleness versions ahead of the learner.
        trainer.producer.start(start, steps)
        for step in tqdm(range(start, steps), desc="GRPO", initial=start, total=steps):
            t0 = time.perf_counter()
            # The step's groups: generated by engines holding version >= step - staleness, scored as they came.
            rollout = trainer.producer.next_batch(step)
            t_wait = time.perf_counter() - t0
            # Group-relative advantages and the GRPO update on the learner ranks.
            rec, advantages = trainer.train(step, rollout)
            # The new weights into vLLM; the probe proves they arrived; the producer may move on.
            rec.update(trainer.sync(step + 1))
            # Held-out evaluation every run.eval_every steps, and after the last one (not counted in its step time).
            if cfg.run.eval_every and (step + 1) % cfg.run.eval_every == 0 and step + 1 < steps:
                rec.update(trainer.evaluate())
            t_step = time.perf_counter() - t0
            if step + 1 == steps:
                trainer.history["eval_last"] = trainer.evaluate()
                rec.update(trainer.history["eval_last"])
            # Everything a person looks at: metrics, the progress line, the step's rollouts.
            rec.update(time_wait_rollout_s=t_wait, time_step_s=t_step, version=trainer.version,
                       engine_restarts=trainer.engines.restarts,
                       sandbox_retries=trainer.reward_restarts)
            trainer.log(step, rec)
            trainer.dump(step, rollout, advantages)
            # A checkpoint every run.checkpoint_every steps and at the end: exact resume from here.
            if (every and (step + 1) % every == 0) or step + 1 == steps:
                trainer.save(step + 1)
        return trainer.summary(nodes())
