"""Held-out evaluation of one checkpoint: K samples per task from the rollout engine's vLLM sampler (the same
sampling code, stop strings and seeds as RLVR's rollouts), scored by the rewards scorer in the sandbox.
Reports unbiased pass@k over tasks, per tier, the mean reward and the verdict mix.

    python -m learner.evaluate --model runs/demo/sft/final --tasks embedded-heldout --samples 8 --out eval.json

The last stdout line is the JSON summary (also written to --out). Every stage of `make demo` is scored with
this, so the stages are compared on the same tasks, prompts, sampler and seeds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from configs.base import TaskSplit, check_lineage, resolve_model_path
from configs.loader import cli_error, run_cli


class EvalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tasks: str = Field("embedded-heldout", description='"embedded-heldout", "embedded", a task file, or '
                       '"heldout:FILE" (the file\'s held-out split)')
    tiers: list[int] | None = Field(None, description="keep only these tiers (embedded tasks)")
    samples: int = Field(8, ge=1, description="completions per task (pass@1 is their mean pass rate)")
    temperature: float = Field(1.0, gt=0.0)
    max_new_tokens: int = Field(96, ge=1)
    seed: int = 0
    backend: str = Field("bwrap", pattern="^(bwrap|docker)$", description="sandbox backend")
    heldout_fraction: float = Field(0.25, ge=0.0, lt=1.0, description="the split shared by every stage "
                                    "(configs.base.TaskSplit)")
    split_seed: int = Field(0, description="the split's seed, as every stage's `split.seed`")
    dtype: str = Field("float32", pattern="^(float32|bfloat16)$", description="vLLM dtype (bfloat16 on GPUs)")
    strip_prompt: bool = Field(True, description="as rollout.strip_prompt: prompts end at a token boundary")
    mode: str = Field("raw", pattern="^(raw|chat)$", description="raw continuations, or chat: the prompt in the "
                      "model's chat template and the answer's last ```cpp block scored (instruct models)")
    turns: int = Field(1, ge=1, description="attempts per sample, as rollout.turns: a failing attempt is shown "
                       "the sandbox's feedback and revises; pass@k is then after feedback and `first_try` holds the "
                       "first attempts' summary (the same samples a turns=1 run scores)")


HELDOUT = "heldout:"


def eval_split(cfg: EvalConfig) -> TaskSplit:
    return TaskSplit(heldout_fraction=cfg.heldout_fraction, seed=cfg.split_seed)


def load_eval_tasks(cfg: EvalConfig) -> list:
    from rewards.tasks import load_embedded, load_tasks

    if cfg.tasks in ("embedded", "embedded-heldout"):
        tasks = load_embedded()
        if cfg.tasks == "embedded-heldout":
            tasks = eval_split(cfg).split(tasks)[1]
    elif cfg.tasks.startswith(HELDOUT):
        tasks = eval_split(cfg).split(load_tasks(cfg.tasks[len(HELDOUT):]))[1]
    else:
        tasks = load_tasks(cfg.tasks)
    if cfg.tiers is not None:
        tasks = [t for t in tasks if t.tier in cfg.tiers]
    if not tasks:
        raise ValueError(f"tasks: no tasks in {cfg.tasks!r} with tiers {cfg.tiers}")
    return sorted(tasks, key=lambda t: t.task_id)


def summarize_by_tier(tasks: list, scored: list) -> dict:
    """The rewards evaluator's summary (pass@k, verdicts, reward mean) overall and for each tier."""
    from rewards.__main__ import summarize

    tier_of = {t.task_id: t.tier for t in tasks}
    by_tier: dict[str, list] = defaultdict(list)
    for s in scored:
        by_tier[f"tier{tier_of[s.task_id]}" if tier_of[s.task_id] is not None else "untiered"].append(s)
    return {**summarize(scored), "by_tier": {k: summarize(v) for k, v in sorted(by_tier.items())}}


def evaluate(model_path: str, cfg: EvalConfig, stop: list[str] | None = None, max_model_len: int = 1024,
             samples_out: Path | None = None) -> dict:
    """pass@k of `model_path` on the configured tasks; the context is capped at the model's own length.
    `samples_out`: every scored completion as JSONL (task, seed index, verdict, reward, text)."""
    from rollout.config import RolloutConfig
    from rewards.scorer import Scorer
    from rollout.engine import RolloutEngine
    from rollout.types import Request
    from sandbox.config import SandboxConfig
    from sandbox.pool import SandboxPool

    if cfg.tasks == "embedded-heldout" or cfg.tasks.startswith(HELDOUT):  # scoring a model on its training tasks
        # would flatter it
        check_lineage(model_path, eval_split(cfg), "--heldout-fraction/--split-seed")
    tasks = load_eval_tasks(cfg)
    positions = json.loads((Path(model_path) / "config.json").read_text()).get("max_position_embeddings")
    max_model_len = min(max_model_len, positions or max_model_len)
    rollout = RolloutConfig(temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens,
                            max_model_len=max_model_len, chat_template=cfg.mode == "chat", turns=cfg.turns,
                            strip_prompt=cfg.strip_prompt, **({"stop": stop} if stop is not None else {}))
    t0 = time.perf_counter()
    engine = RolloutEngine(model_path, rollout, cfg.dtype, cfg.seed)
    # per-task seeds from (seed, task index): every checkpoint sees the same sampling noise
    requests = [Request(("eval", i), t.prompt.rstrip() if cfg.strip_prompt else t.prompt, cfg.samples,
                        cfg.seed * 100_003 + i) for i, t in enumerate(tasks)]
    if cfg.turns > 1:
        return _evaluate_revisions(engine, rollout, tasks, requests, cfg, model_path, samples_out, t0)
    samples = engine.generate(requests)
    t1 = time.perf_counter()
    with SandboxPool(SandboxConfig(backend=cfg.backend, num_workers=os.cpu_count() or 1)) as pool:
        scored = Scorer(pool, mode=cfg.mode).score([(tasks[s.key[1]], s.text) for s in samples])
    if samples_out is not None:
        with open(samples_out, "w") as f:
            for sample, result in zip(samples, scored):
                f.write(json.dumps({**result.to_json(), "index": sample.index, "completion": result.completion,
                                    "truncated": sample.truncated}) + "\n")
    summary = summarize_by_tier(tasks, scored)
    summary.update(model=model_path, config=cfg.model_dump(), seconds_generate=round(t1 - t0, 1),
                   seconds_score=round(time.perf_counter() - t1, 1),
                   truncated_fraction=round(sum(s.truncated for s in samples) / len(samples), 4))
    return summary


def _evaluate_revisions(engine, rollout, tasks: list, requests: list, cfg: EvalConfig, model_path: str,
                        samples_out: Path | None, t0: float) -> dict:
    """cfg.turns > 1: the RLVR producer's revision rounds (rollout/revision.py) over this one engine, so
    evaluation revises exactly as training does. The first attempts use the turns=1 requests and seeds."""
    from rewards.scorer import Scorer
    from rewards.types import ScoredSample
    from rollout.engine_group import EngineGroup, LocalCalls
    from rollout.producer import Producer
    from sandbox.config import SandboxConfig
    from sandbox.pool import SandboxPool

    with SandboxPool(SandboxConfig(backend=cfg.backend, num_workers=os.cpu_count() or 1)) as pool:
        producer = Producer(EngineGroup(lambda: engine, 1, LocalCalls()), Scorer(pool, mode=cfg.mode).score,
                            tasks, rollout, seed=cfg.seed, staleness=0)
        try:
            trajectories, stats = producer.rollout([tasks[q.key[1]] for q in requests], [q.key for q in requests],
                                                   cfg.samples, [q.seed for q in requests])
        finally:
            producer.close()
    final = [ScoredSample(t.task_id, t.completion.text, t.passed, t.verdict.value, t.tests_passed, t.tests_total,
                          t.reward, dict(t.components), detail=t.detail, diagnostics=t.diagnostics,
                          sanitizer=t.sanitizer) for t in trajectories]
    first = [ScoredSample(t.task_id, t.attempts[0]["completion"], t.attempts[0]["passed"], t.attempts[0]["verdict"],
                          0, 0, t.attempts[0]["reward"]) for t in trajectories]
    if samples_out is not None:
        with open(samples_out, "w") as f:
            for t, result in zip(trajectories, final):
                f.write(json.dumps({**result.to_json(), "index": t.completion.index, "completion": result.completion,
                                    "truncated": t.completion.truncated, "turns": t.turns,
                                    "first_passed": t.first_passed, "attempts": list(t.attempts)}) + "\n")
    summary = summarize_by_tier(tasks, final)
    summary.update(first_try=summarize_by_tier(tasks, first), model=model_path, config=cfg.model_dump(),
                   seconds_generate_and_score=round(time.perf_counter() - t0, 1),
                   revision_requests=stats["revision_requests"], revision_context_full=stats["revision_context_full"],
                   truncated_fraction=round(sum(t.completion.truncated for t in trajectories) / len(trajectories), 4))
    return summary


def _boolean(text: str) -> bool:
    if text.lower() not in ("true", "false", "1", "0"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return text.lower() in ("true", "1")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m learner.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="HF checkpoint directory (config.json + tokenizer) or a hub "
                        "id in the local Hugging Face cache")
    parser.add_argument("--out", help="also write the summary here (and every completion to <out>.samples.jsonl)")
    for name, field in EvalConfig.model_fields.items():
        if name != "tiers":
            kind = _boolean if isinstance(field.default, bool) else type(field.default)
            parser.add_argument(f"--{name.replace('_', '-')}", type=kind, default=field.default, help=field.description)
    parser.add_argument("--tiers", type=lambda s: [int(x) for x in s.split(",")], default=None, help="e.g. 0,1")
    args = parser.parse_args(argv)
    # one process: vLLM's separate engine-core process costs ~20 s of start-up per checkpoint on CPU
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    # vLLM logs to stdout, even from its exit handlers: fd 1 goes to stderr, our last line to the real stdout
    sys.stdout.flush()
    summary_out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    try:
        args.model = resolve_model_path(args.model, field="--model")
    except ValueError as exc:
        with contextlib.redirect_stdout(summary_out):
            return cli_error(str(exc), 2)
    if not (Path(args.model) / "config.json").exists():
        with contextlib.redirect_stdout(summary_out):
            return cli_error(f"--model: {args.model} has no config.json (not a Hugging Face checkpoint)", 2)
    try:
        cfg = EvalConfig(**{k: getattr(args, k) for k in EvalConfig.model_fields})
        summary = evaluate(args.model, cfg,
                           samples_out=Path(args.out).with_suffix(".samples.jsonl") if args.out else None)
    except ValueError as exc:
        with contextlib.redirect_stdout(summary_out):
            return cli_error(str(exc), 2)
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary), file=summary_out, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
