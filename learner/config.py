"""The RLVR stage's one typed config. Presets live in configs/rlvr/*.yaml; `key=value` overrides on the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from configs.base import StrictModel, TaskSplit, check_lineage, flat_settings, is_hub_id
from rewards.reward import RewardConfig
from rollout.config import RolloutConfig

__all__ = ["RLVRConfig", "RolloutConfig"]


class ModelConfig(StrictModel):
    path: str = Field("tiny", description='HF checkpoint directory, a hub id (org/name: resolved once from the local '
                      'HF cache, downloaded only if absent and online), or "tiny" for the embedded tiny policy')
    dtype: Literal["float32", "bfloat16"] = Field("float32", description="compute dtype of vLLM and the learner "
                                                  "(bfloat16: fp32 master weights, bf16 compute)")
    lora_rank: int = Field(0, ge=0, description="0 = full fine-tuning; >0 trains LoRA adapters (merged for sync)")
    lora_alpha: int = Field(32, ge=1, description="LoRA scaling numerator (scale = alpha / rank)")
    lora_targets: list[str] = Field(["q_proj", "k_proj", "v_proj", "o_proj"], description="modules given adapters")


class TaskConfig(StrictModel):
    source: str = Field("embedded", description='"embedded" or a task file (HumanEval-X, MultiPL-E, native)')
    tiers: list[int] | None = Field(None, description="keep only tasks of these tiers, from any source: a task "
                                    "without a tier (HumanEval-X, MultiPL-E, a native row without `tier`) is "
                                    "dropped; None keeps every task")
    split: TaskSplit = Field(default_factory=TaskSplit, description="the held-out tasks (evaluated, never "
                             "trained on); shared by every stage")
    lenient: bool = Field(False, description="skip records of tasks.source that do not validate (each logged with "
                          "its file, line and reason; counted in the start-up line) instead of stopping")


class RewardWorkersConfig(StrictModel):
    workers: int = Field(1, ge=1, description="reward actors (each owns a sandbox pool)")
    slots_per_worker: int = Field(1, ge=0, description="sandbox jails run at once per reward actor; 0: one per core "
                                  "the actor's node has (what is free while the engines and learner wait for scores)")
    cpus_per_worker: float | None = Field(None, gt=0, description="Ray CPUs reserved per reward actor; default "
                                          "slots_per_worker (1 when that is 0). Fewer than the slots lets scoring "
                                          "use cores Ray has reserved for engines and learners that idle meanwhile")
    backend: Literal["docker", "bwrap"] = Field("bwrap", description="sandbox backend")
    mode: Literal["raw", "chat"] = Field("raw", description="raw continuations, or chat answers (code extracted)")
    resources: dict[str, float] = Field(default_factory=dict, description="custom Ray resources, e.g. {sandbox: 1}")
    weights: RewardConfig = Field(default_factory=RewardConfig, description="reward components and their weights")

    @property
    def reserved_cpus(self) -> float:
        return self.cpus_per_worker if self.cpus_per_worker is not None else float(self.slots_per_worker or 1)


class AlgoConfig(StrictModel):
    lr: float = Field(1e-5, gt=0, description="AdamW learning rate")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    grad_clip: float = Field(1.0, gt=0, description="max global gradient norm")
    clip_low: float = Field(0.2, ge=0, description="lower ratio bound 1-clip_low of the PPO surrogate")
    clip_high: float = Field(0.28, ge=0, description="clip-higher: upper ratio bound 1+clip_high")
    kl_coef: float = Field(0.0, ge=0, description="k3 KL to a frozen reference; 0 loads no reference")
    scale_by_std: bool = Field(True, description="False = Dr. GRPO (mean-centred only)")
    filter_equal_rewards: bool = Field(True, description="drop groups whose rewards are all equal (zero advantage)")
    truncation: Literal["mask", "penalty", "keep"] = Field("mask", description="what a completion cut by "
                                                           "max_new_tokens trains with: no loss, a penalty, as is")
    truncation_penalty: float = Field(-1.0, description="added to a truncated completion's reward (truncation=penalty)")
    is_cap: float = Field(2.0, gt=0, description="truncated importance-sampling cap on pi_learner/pi_vllm")
    dual_clip: float | None = Field(None, gt=1.0, description="dual-clip PPO: cap a negative-advantage token's "
                                    "loss at -dual_clip * A (verl's clip_ratio_c, 3.0); None: off")
    log_ratio_clamp: float = Field(20.0, gt=0, description="|log pi/pi_old| and |log ref/pi| are clamped to this "
                                   "before exp (no inf from one stale or numerically off token)")
    kl_clamp: float = Field(10.0, gt=0, description="per-token k3 KL estimate capped at this (verl's low_var_kl)")
    warmup_steps: int = Field(0, ge=0, description="linear LR warmup over this many optimizer steps (0: none)")
    probe_tolerance: float = Field(0.05, gt=0, description="max mean |logprob diff| vLLM vs learner after sync")
    micro_batch_size: int = Field(16, ge=1, description="sequences per forward/backward on each rank")
    minibatches: int = Field(1, ge=1, description="optimizer steps per rollout batch (>1: the clip matters)")


class LearnerConfig(StrictModel):
    backend: Literal["local", "fsdp2", "deepspeed"] = Field("local", description="local: one plain process; fsdp2 / "
                                                             "deepspeed: data-parallel ranks")
    world_size: int = Field(1, ge=1, description="learner ranks (Ray actors)")
    zero_stage: Literal[2, 3] = Field(2, description="DeepSpeed ZeRO stage")
    cpus_per_worker: float = Field(1.0, gt=0, description="Ray CPUs per rank (also its torch threads)")
    gpus_per_worker: float = Field(0.0, ge=0, description="Ray GPUs per rank")
    placement: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = Field(
        "PACK", description="Ray placement-group strategy of the ranks: PACK fills a node first and spills over to "
        "more nodes when one is too small; STRICT_PACK keeps them on one node")
    placement_timeout_s: float = Field(300, gt=0, description="an unplaceable learner is an error after this long")
    activation_checkpointing: bool = Field(False, description="recompute decoder layers in backward instead of "
                                           "storing their activations (less memory, ~1/3 more compute)")
    logprob_chunk_tokens: int = Field(4096, ge=1, description="tokens per chunk of the fp32 log-softmax over the "
                                      "vocabulary (peak extra memory ~ chunk x vocab x 4 bytes)")

    @model_validator(mode="after")
    def _local_is_one_process(self):
        if self.backend == "local" and self.world_size != 1:
            raise ValueError("learner.world_size must be 1 with backend=local (use fsdp2 or deepspeed)")
        return self


def absolute_out_dir(out_dir: str, cwd: Path) -> tuple[str, str | None]:
    """`out_dir` made absolute against `cwd`, and a warning when that is inside a Ray job's unpacked working
    dir (`.../runtime_resources/working_dir_files/...`): Ray deletes those copies, so outputs written there
    are lost; pass an absolute path (`run.out_dir=$PWD/runs/x` expands on the submitting machine)."""
    path = Path(out_dir)
    if path.is_absolute():
        return str(path), None
    resolved = str(cwd / path)
    if "runtime_resources" in cwd.parts:
        return resolved, (f"run.out_dir={out_dir!r} is relative and this job runs in Ray's copy of the working dir "
                          f"({cwd}): outputs go to {resolved}, which Ray deletes when it cleans up; pass an absolute "
                          "run.out_dir (e.g. run.out_dir=$PWD/runs/x on the submit command line)")
    return resolved, None


class RunConfig(StrictModel):
    steps: int = Field(3, ge=1, description="GRPO steps")
    staleness: int = Field(0, ge=0, le=4, description="0 = synchronous and reproducible; 1-2 = async")
    seed: int = Field(0, description="seeds prompt order, sampling and the learner")
    out_dir: str = Field("runs/rlvr", description="metrics, checkpoints, rollouts, report and config.json")
    checkpoint_every: int = Field(0, ge=0, description="0 = only at the end")
    resume: bool | Literal["force"] = Field(True, description="continue from the newest checkpoint in out_dir (or "
                                           "resume_from) if there is one; a checkpoint trained under other settings "
                                           "(RESUME_IGNORES lists what may change) is refused with the differences "
                                           "unless 'force'; false: start over (the old checkpoints are set aside)")
    resume_from: str | None = Field(None, description="a run directory (its newest checkpoint) or one checkpoint "
                                    "directory to continue from when out_dir has none of its own")
    keep_checkpoints: int = Field(0, ge=0, description="keep only the newest N checkpoints (0: all)")
    eval_every: int = Field(0, ge=0, description="0 = held-out eval only before the first and after the last step")
    eval_samples: int = Field(4, ge=1, description="completions per held-out task at each evaluation")
    ray_address: str | None = Field(None, description='None: attach to a running cluster or start a local one;'
                                    ' "local": always start a private local one')
    tensorboard: bool = Field(True, description="also write TensorBoard scalars to out_dir/tensorboard")
    name: str | None = Field(None, description="the run's name: the W&B run, the `run` tag of the Ray metrics "
                             "(one line per run in Grafana) and the report title; default: out_dir's last part")
    wandb_project: str | None = Field(None, description="also log to this Weights & Biases project (the run "
                                      "named run.name, the resolved config attached, resumed by the same id)")
    log_rollouts: str = Field("sample:4", pattern=r"^(none|all|sample:[1-9][0-9]*)$",
                              description="rollout dumps in out_dir/rollouts/step_NNNNNN.jsonl.gz: none, all, or "
                              "sample:N (N groups per step, best and worst kept)")
    call_timeout_s: float = Field(1800, gt=0, description="every remote call (generate, score, train, sync, probe, "
                                  "save) that takes longer is an error naming the stage instead of a hang")
    log_every: int = Field(1, ge=0, description="one progress line per this many steps to the log (0: none)")


# What may change when a run resumes without changing what it trains: its length and output, logging, and
# where the work runs (placement, resources, transfer buffers). Everything else is recorded in each checkpoint.
RESUME_IGNORES = (
    "run.name", "run.steps", "run.out_dir", "run.resume", "run.resume_from", "run.keep_checkpoints", "run.checkpoint_every",
    "run.eval_every", "run.eval_samples", "run.ray_address", "run.tensorboard", "run.wandb_project",
    "run.log_rollouts", "run.call_timeout_s", "run.log_every", "rollout.engines", "rollout.cpus_per_engine",
    "rollout.gpus_per_engine", "rollout.kv_cache_gib", "rollout.gpu_memory_utilization", "rollout.enforce_eager",
    "rollout.weight_transfer.", "reward.workers", "reward.slots_per_worker", "reward.cpus_per_worker",
    "reward.resources", "reward.backend", "learner.cpus_per_worker", "learner.gpus_per_worker", "learner.placement",
    "learner.placement_timeout_s", "learner.activation_checkpointing", "learner.logprob_chunk_tokens",
)


class RLVRConfig(StrictModel):
    model: ModelConfig = Field(default_factory=ModelConfig, description="the policy")
    tasks: TaskConfig = Field(default_factory=TaskConfig, description="prompts and their split")
    rollout: RolloutConfig = Field(default_factory=RolloutConfig, description="generation")
    reward: RewardWorkersConfig = Field(default_factory=RewardWorkersConfig, description="scoring")
    algo: AlgoConfig = Field(default_factory=AlgoConfig, description="the GRPO update")
    learner: LearnerConfig = Field(default_factory=LearnerConfig, description="the learner ranks")
    run: RunConfig = Field(default_factory=RunConfig, description="steps, pipelining, checkpoints, logging")

    @model_validator(mode="after")
    def _chat_on_both_sides(self):
        if (self.reward.mode == "chat") != self.rollout.chat_template:
            raise ValueError("reward.mode: chat scores a chat answer's code block and needs rollout.chat_template: true "
                             "(and the other way round); set both or neither")
        return self

    @model_validator(mode="after")
    def _check_paths(self):
        if self.model.lora_rank and self.learner.backend == "fsdp2":
            raise ValueError("model.lora_rank: LoRA is supported with learner.backend local or deepspeed, not fsdp2")
        if self.model.path != "tiny" and not is_hub_id(self.model.path):  # hub ids: checked once resolved
            check_checkpoint(self.model.path, self.tasks.split)
        if self.tasks.source != "embedded" and not Path(self.tasks.source).exists():
            raise ValueError(f"tasks.source: {self.tasks.source} does not exist")
        return self


def check_checkpoint(path: str, split: TaskSplit) -> None:
    """A policy directory: HF config, tokenizer, and a lineage compatible with the run's split."""
    p = Path(path)
    if not (p / "config.json").exists():
        raise ValueError(f"model.path: {p} has no config.json (not a Hugging Face checkpoint)")
    if not any((p / f).exists() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
        raise ValueError(f"model.path: {p} has no tokenizer (tokenizer.json / tokenizer_config.json);"
                         " save the tokenizer next to the weights")
    check_lineage(p, split, "tasks.split")


def resume_settings(cfg: "RLVRConfig") -> dict:
    """What a checkpoint records and a resume must match: every setting but RESUME_IGNORES."""
    return flat_settings(cfg.model_dump(mode="json"), RESUME_IGNORES)


def run_name(cfg: "RLVRConfig") -> str:
    return cfg.run.name or Path(cfg.run.out_dir).name or "rlvr"
