"""`make demo`, the README's main job: pretrain -> SFT -> RLVR -> held-out evaluation of every stage -> one report.

    python -m scripts.pipeline --config configs/pipeline/tiny-cpu.yaml [key=value ...]

1. pretrain  `python -m pretrain` (torchrun when `pretrain.nproc` > 1) on the embedded C++ corpus
2. sft       `python -m sft` from the pretrained checkpoint, on the embedded tasks' training split
3. rlvr      `ray job submit -- python -m learner` from the SFT checkpoint, once per seed, to a Ray cluster
             (`rlvr.ray_address`) or to a local head this script starts and stops (only its own processes)
4. eval      `python -m learner.evaluate` on each stage's checkpoint: the same held-out tasks, sampler and seeds
5. report    `<out_dir>/report.html`: losses, BPB, reward curves, pass@1 per stage, verdict mix, time per stage

Every stage is optional: `pretrain: null` with `model: <HF directory or hub id>` starts from your own model
(SFT, or RLVR too with `sft: null`); RLVR starts from the last stage's checkpoint and is judged against it
(configs/pipeline/gpu-own-model.yaml). Every stage records its command and JSON summary in `<out_dir>/<stage>/stage.json` and is skipped when that
file says it already ran with the same command (the stage CLIs themselves also reuse their outputs and resume
from their checkpoints). The last stdout line is one JSON summary: `report`, `pass@1` per stage, ...
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from configs.base import StrictModel, TaskSplit, resolve_model_path
from configs.loader import config_cli, run_cli
from learner.evaluate import EvalConfig

REPO = Path(__file__).resolve().parents[1]
STAGES = ("pretrain", "sft", "rlvr")
log = logging.getLogger("crucible.pipeline")


class StageSpec(StrictModel):
    config: str = Field(description="the stage's YAML preset")
    overrides: list[str] = Field(default_factory=list, description="key=value overrides for the stage's CLI")
    nproc: int = Field(1, ge=1, description=">1: launch with torchrun --nproc-per-node (set the preset's parallel)")


class RLVRSpec(StrictModel):
    config: str = "configs/rlvr/tiny-cpu.yaml"
    overrides: list[str] = Field(default_factory=list)
    seeds: list[int] = Field([0, 1, 2], min_length=1, description="one RLVR run (Ray job) per seed")
    ray_address: str | None = Field(None, description="dashboard URL of a running cluster (http://head:8265); "
                                                      "unset: start a local head for the run and stop it after")
    metrics_port: int | None = Field(None, description="Prometheus port of the local head (default: a free one)")


class FamiliesSpec(StrictModel):
    """Procedural task families (rewards.families) for every stage: SFT learns their training instances, RLVR
    trains on them, and the evaluation scores the held-out instances (the same split as everything else)."""

    families: list[str] = Field(["affine", "array", "string"], min_length=1)
    levels: list[int] = Field([0, 1, 2, 3], min_length=1, description="difficulty levels (a task's tier)")
    per_level: int = Field(20, ge=1, description="instances per family and level")
    seed: int = 0


class LearningCheck(StrictModel):
    tiers: list[int] = Field([0], description="the tier(s) where RLVR must beat SFT: the easiest one")
    metric: Literal["pass@1", "reward_mean"] = Field("pass@1", description="what must rise over SFT's")
    min_gain: float = Field(0.1, ge=0, description="gain over SFT (in `metric`) that counts as clearly better")


class PipelineConfig(StrictModel):
    out_dir: str = Field("runs/demo", description="every stage's outputs, the evaluations and report.html")
    split: TaskSplit = Field(default_factory=TaskSplit, description="the held-out tasks, passed to every stage "
                             "(corpus.split, data.split, tasks.split, the evaluator's --heldout-fraction/--split-seed)")
    model: str | None = Field(None, description="your own starting checkpoint (a local HF directory or a hub id) "
                              "with pretrain: null; SFT (or RLVR, with sft: null too) starts from it")
    pretrain: StageSpec | None = Field(StageSpec(config="configs/pretrain/tiny-cpu.yaml"),
                                       description="null: skip pretraining and start from `model`")
    sft: StageSpec | None = Field(StageSpec(config="configs/sft/tiny-cpu.yaml"),
                                  description="null: skip SFT (RLVR starts from pretraining's checkpoint or `model`)")
    families: FamiliesSpec | None = Field(None, description="procedural tasks: SFT's task_files, RLVR's tasks.source "
                                          "and the evaluation's held-out tasks (eval.tasks is then heldout:FILE)")
    rlvr: RLVRSpec = Field(default_factory=RLVRSpec)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    learning: LearningCheck = Field(default_factory=LearningCheck)

    @model_validator(mode="after")
    def _one_start(self):
        if self.pretrain is None and not self.model:
            raise ValueError("pretrain is null: set model to the checkpoint to start from (a local Hugging Face "
                             "directory or a hub id)")
        if self.pretrain is not None and self.model:
            raise ValueError(f"model={self.model} is the start only when pretraining is skipped: set pretrain: null "
                             "(or remove model)")
        return self

    @model_validator(mode="after")
    def _one_split(self):
        if (self.eval.heldout_fraction, self.eval.split_seed) != (self.split.heldout_fraction, self.split.seed):
            raise ValueError("eval.heldout_fraction / eval.split_seed differ from split: set `split`, which every "
                             "stage and the evaluation use")
        return self

    def split_overrides(self, prefix: str) -> list[str]:
        return [f"{prefix}.heldout_fraction={self.split.heldout_fraction}", f"{prefix}.seed={self.split.seed}"]


# ---- running one stage --------------------------------------------------------------------------------------
def last_json_line(text: str) -> dict | None:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                return None
    return None


def set_aside(path: Path) -> None:
    """Outputs that no longer match what asked for them are moved next to themselves, never deleted."""
    if path.exists():
        dest = path.with_name(f"{path.name}.stale-{time.strftime('%Y%m%d-%H%M%S')}")
        log.warning("%s was built by another command or from an older upstream output; moved to %s", path, dest)
        path.rename(dest)


def run_stage(name: str, cmd: list[str], record: Path, env: dict | None = None, stage_dir: Path | None = None,
              same=lambda a, b: a == b) -> dict:
    """Runs `cmd` (stderr passes through: progress bars) unless `record` says this command already ran; returns
    {"command", "summary", "seconds", "reused"}. A failed command raises with its last output. When the record
    holds another command, `stage_dir` (the stage's outputs) is set aside first: a stage CLI would otherwise
    resume from checkpoints made with other settings. Without a record the CLI resumes (an interrupted run)."""
    if record.exists():
        done = json.loads(record.read_text())
        if same(done.get("command"), cmd):
            log.info("%s: reusing %s", name, record)
            return {**done, "reused": True}
        set_aside(stage_dir or record)
    log.info("%s: %s", name, " ".join(cmd))
    record.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stdout:  # streamed so a long stage shows its own summary lines as they come
        sys.stderr.write(line)
        lines.append(line)
    proc.wait()
    summary = last_json_line("".join(lines))
    if proc.returncode != 0 or summary is None or "error" in summary:
        why = (summary or {}).get("error") or "".join(lines[-20:])
        raise RuntimeError(f"stage {name} failed (exit {proc.returncode}): {why}")
    done = {"command": cmd, "summary": summary, "seconds": round(time.monotonic() - started, 1)}
    record.write_text(json.dumps(done, indent=1))
    return {**done, "reused": False}


def python_cmd(module: str, nproc: int) -> list[str]:
    if nproc > 1:
        return [str(Path(sys.executable).with_name("torchrun")), f"--nproc-per-node={nproc}", "-m", module]
    return [sys.executable, "-m", module]


def eval_cmd(model: str, cfg: EvalConfig, out: Path) -> list[str]:
    cmd = [sys.executable, "-m", "learner.evaluate", "--model", model, "--out", str(out)]
    for key, value in cfg.model_dump().items():
        if key == "turns" and value == 1:  # a setting newer than the recorded commands: its default adds no flag
            continue
        if value is not None:
            cmd += [f"--{key.replace('_', '-')}", ",".join(map(str, value)) if isinstance(value, list) else str(value)]
    return cmd


# ---- the pipeline -------------------------------------------------------------------------------------------
def write_families(spec: FamiliesSpec, out: Path) -> Path:
    """The families' task file, named by its content: a changed spec is a new file, so no stage record that
    names the old one is reused for it."""
    from rewards.families import generate, task_row

    rows = [json.dumps(task_row(t)) for t in generate(spec.families, spec.levels, spec.per_level, spec.seed)]
    text = "\n".join(rows) + "\n"
    path = out / "tasks" / f"families-{hashlib.sha256(text.encode()).hexdigest()[:12]}.jsonl"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return path


def task_overrides(cfg: PipelineConfig, stage: str) -> list[str]:
    """What each stage is told about the families' task file (nothing without `families`)."""
    if cfg.families is None:
        return []
    path = write_families(cfg.families, Path(cfg.out_dir).resolve())
    return {"sft": [f"data.task_files=[{path}]"], "rlvr": [f"tasks.source={path}", "tasks.tiers=null"]}[stage]


def eval_config(cfg: PipelineConfig) -> EvalConfig:
    if cfg.families is None:
        return cfg.eval
    path = write_families(cfg.families, Path(cfg.out_dir).resolve())
    return cfg.eval.model_copy(update={"tasks": f"heldout:{path}", "tiers": None})


def rlvr_cmd(cfg: PipelineConfig, dashboard: str, sft_checkpoint: str, seed: int, run_dir: Path) -> list[str]:
    # From a checkout the job gets the checkout as its working dir; an installed package is already importable
    # by the job's python (uploading site-packages would be wrong).
    working_dir = ["--working-dir", str(REPO)] if (REPO / "pyproject.toml").is_file() else []
    return [str(Path(sys.executable).with_name("ray")), "job", "submit", "--address", dashboard,
            *working_dir, "--", "python", "-m", "learner", "--config", cfg.rlvr.config,
            *cfg.split_overrides("tasks.split"), *task_overrides(cfg, "rlvr"), *cfg.rlvr.overrides,
            f"model.path={sft_checkpoint}", f"run.seed={seed}", f"run.out_dir={run_dir}"]


def same_job(recorded: list[str] | None, cmd: list[str]) -> bool:
    """The dashboard address changes with every local head; the job after `--` does not."""
    return bool(recorded) and "--" in recorded and recorded[recorded.index("--"):] == cmd[cmd.index("--"):]


def run_rlvr(cfg: PipelineConfig, out: Path, sft_checkpoint: str) -> list[dict]:
    """One Ray job per seed. Seeds whose record matches the job are reused; a local head is started only when
    some seed has to run, and stopped (its own processes only) when they have."""
    from learner.local_head import LocalRayHead

    runs, pending = {}, []
    for seed in cfg.rlvr.seeds:
        run_dir = out / "rlvr" / f"seed-{seed}"
        record = run_dir / "stage.json"
        if record.exists() and same_job(json.loads(record.read_text())["command"],
                                        rlvr_cmd(cfg, "", sft_checkpoint, seed, run_dir)):
            log.info("rlvr seed %d: reusing %s", seed, record)
            runs[seed] = {**json.loads(record.read_text()), "seed": seed, "reused": True}
        else:
            pending.append((seed, run_dir, record))
    head = None
    try:
        if pending and cfg.rlvr.ray_address:
            dashboard, env = cfg.rlvr.ray_address, dict(os.environ)
        elif pending:
            log.info("rlvr: starting a local Ray head (loopback only; stopped when the RLVR runs end)")
            head = LocalRayHead(metrics_port=cfg.rlvr.metrics_port)
            head.wait_for_job_agent()
            dashboard, env = head.dashboard, head.env
            log.info("rlvr: Ray dashboard %s, Prometheus metrics %s", head.dashboard, head.metrics_url)
        for seed, run_dir, record in pending:
            cmd = rlvr_cmd(cfg, dashboard, sft_checkpoint, seed, run_dir)
            runs[seed] = {**run_stage(f"rlvr seed {seed}", cmd, record, env, run_dir, same_job), "seed": seed}
    finally:
        if head is not None:
            head.stop()
    return [runs[seed] for seed in cfg.rlvr.seeds]


def run_pipeline(cfg: PipelineConfig) -> dict:
    from scripts.pipeline_report import learning_table, write_report

    out = Path(cfg.out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    stages: dict[str, dict] = {}
    # The start: pretraining's checkpoint, or your own model (pretrain: null).
    if (pre := cfg.pretrain) is not None:
        stages["pretrain"] = run_stage("pretrain", [*python_cmd("pretrain", pre.nproc), "--config", pre.config,
                                                    f"out_dir={out / 'pretrain'}", *cfg.split_overrides("corpus.split"),
                                                    *pre.overrides],
                                       out / "pretrain" / "stage.json", stage_dir=out / "pretrain")
        start, start_name = stages["pretrain"]["summary"]["checkpoint"], "pretrain"
        if not stages["pretrain"]["reused"]:
            for downstream in ("sft", "rlvr", "eval"):
                set_aside(out / downstream)
    else:
        start, start_name = resolve_model_path(cfg.model, "model"), "base"
        if not (Path(start) / "config.json").is_file():
            raise ValueError(f"model: {cfg.model} has no config.json (not a Hugging Face checkpoint)")
    checkpoints = {start_name: start}
    if cfg.sft is not None:
        stages["sft"] = run_stage("sft", [*python_cmd("sft", cfg.sft.nproc), "--config", cfg.sft.config,
                                          f"out_dir={out / 'sft'}", f"model.name_or_path={start}",
                                          *cfg.split_overrides("data.split"), *task_overrides(cfg, "sft"),
                                          *cfg.sft.overrides],
                                  out / "sft" / "stage.json", stage_dir=out / "sft")
        checkpoints["sft"] = stages["sft"]["summary"]["checkpoint"]
        if not stages["sft"]["reused"]:
            for downstream in ("rlvr", "eval"):
                set_aside(out / downstream)
    # RLVR starts from the last stage's checkpoint, and is judged against it.
    rlvr_start = list(checkpoints)[-1]
    sft_checkpoint = checkpoints[rlvr_start]
    rlvr_runs = run_rlvr(cfg, out, sft_checkpoint)
    checkpoints.update({f"rlvr/seed-{r['seed']}": r["summary"]["checkpoint"] for r in rlvr_runs})
    evals = {}
    for name, path in checkpoints.items():
        target = out / "eval" / f"{name.replace('/', '-')}.json"
        if name.startswith("rlvr/") and not next(r for r in rlvr_runs if f"rlvr/seed-{r['seed']}" == name)["reused"]:
            set_aside(target.with_suffix(".stage.json"))
        evals[name] = run_stage(f"eval {name}", eval_cmd(path, eval_config(cfg), target),
                                target.with_suffix(".stage.json"))
    learning = learning_table(evals, rlvr_runs, cfg.learning.tiers, cfg.learning.min_gain, cfg.learning.metric,
                              start=rlvr_start)
    seconds = {**{name: stage["seconds"] for name, stage in stages.items()},
               "rlvr": round(sum(r["seconds"] for r in rlvr_runs), 1),
               "eval": round(sum(e["seconds"] for e in evals.values()), 1)}
    report = write_report(out / "report.html", cfg, stages, rlvr_runs, evals, learning, seconds,
                          eval_config(cfg).tasks)
    rlvr_pass = [evals[f"rlvr/seed-{r['seed']}"]["summary"].get("pass@1") for r in rlvr_runs]
    return {"report": str(report),
            "pass@1": {**{name: evals[name]["summary"].get("pass@1") for name in checkpoints
                          if not name.startswith("rlvr/")},
                       "rlvr": round(sum(rlvr_pass) / len(rlvr_pass), 4)},
            "pass@1_rlvr_by_seed": dict(zip((r["seed"] for r in rlvr_runs), rlvr_pass)),
            **({"pass@1_first_try": {name: ev["summary"]["first_try"].get("pass@1") for name, ev in evals.items()}}
               if cfg.eval.turns > 1 else {}),
            "learning": learning, "checkpoints": checkpoints, "seconds": seconds,
            "seconds_this_run": round(time.monotonic() - started, 1),
            "reused": [n for n, s in {**stages, **{f"rlvr/seed-{r['seed']}": r for r in rlvr_runs},
                                      **{f"eval/{k}": v for k, v in evals.items()}}.items() if s.get("reused")]}


def main(argv: list[str] | None = None) -> int:
    return config_cli(argv, prog="python -m scripts.pipeline", description=__doc__.split("\n\n")[0].replace("\n", " "),
                      default_config="configs/pipeline/tiny-cpu.yaml", model=PipelineConfig, run=run_pipeline,
                      example="rlvr.seeds=[0] out_dir=runs/x", failures=(RuntimeError, ValueError, OSError),
                      log_format="[pipeline] %(message)s")


if __name__ == "__main__":
    sys.exit(run_cli(main))
