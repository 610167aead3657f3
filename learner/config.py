"""The RLVR stage's one typed config. Presets live in configs/rlvr/*.yaml; `key=value` overrides on the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rewards.reward import RewardConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelConfig(_Strict):
    path: str = Field("tiny", description='HF checkpoint directory, or "tiny" for the embedded tiny policy')
    dtype: Literal["float32", "bfloat16"] = "float32"
    lora_rank: int = Field(0, ge=0, description="0 = full fine-tuning; >0 trains LoRA adapters (merged for sync)")
    lora_alpha: int = Field(32, ge=1)
    lora_targets: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj"]


class TaskConfig(_Strict):
    source: str = Field("embedded", description='"embedded" or a task file (HumanEval-X, MultiPL-E, native)')
    tiers: list[int] | None = Field(None, description="keep only these tiers (embedded tasks)")
    heldout_fraction: float = Field(0.25, ge=0.0, lt=1.0)
    split_seed: int = 0


class RolloutConfig(_Strict):
    engines: int = Field(1, ge=1)
    prompts_per_step: int = Field(8, ge=1)
    samples_per_prompt: int = Field(8, ge=2, description="K: group size for group-relative advantages")
    temperature: float = Field(1.0, gt=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_new_tokens: int = Field(128, ge=1)
    stop: list[str] = Field(["\n}\n"], description="kept in the completion (the scorer applies each task's own "
                            "stop tokens and suffix): a top-level closing brace ends a function, EOS anything else")
    max_model_len: int = Field(1024, ge=64)
    cpus_per_engine: float = Field(1.0, gt=0)
    gpus_per_engine: float = Field(0.0, ge=0)
    gpu_memory_utilization: float = Field(0.5, gt=0, le=1)
    kv_cache_gib: int = Field(1, ge=1, description="VLLM_CPU_KVCACHE_SPACE on CPU engines")
    enforce_eager: bool = True
    strip_prompt: bool = Field(True, description="drop the prompt's trailing whitespace so it ends at a token "
                               "boundary: BPE merges '\\n' with the next line's indent, and a prompt ending in a bare "
                               "'\\n' token is one the model rarely saw before code (bigcode-harness does the same)")


class RewardWorkersConfig(_Strict):
    workers: int = Field(1, ge=1)
    slots_per_worker: int = Field(1, ge=1, description="sandbox jails (and CPUs) per reward actor")
    backend: Literal["docker", "bwrap"] = "bwrap"
    mode: Literal["raw", "chat"] = "raw"
    resources: dict[str, float] = Field(default_factory=dict, description="custom Ray resources, e.g. {sandbox: 1}")
    weights: RewardConfig = Field(default_factory=RewardConfig)


class AlgoConfig(_Strict):
    lr: float = Field(1e-5, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    clip_low: float = Field(0.2, ge=0)
    clip_high: float = Field(0.28, ge=0, description="clip-higher: upper ratio bound 1+clip_high")
    kl_coef: float = Field(0.0, ge=0, description="k3 KL to a frozen reference; 0 loads no reference")
    scale_by_std: bool = Field(True, description="False = Dr. GRPO (mean-centred only)")
    filter_equal_rewards: bool = True
    truncation: Literal["mask", "penalty", "keep"] = "mask"
    truncation_penalty: float = -1.0
    is_cap: float = Field(2.0, gt=0, description="truncated importance-sampling cap on pi_learner/pi_vllm")
    probe_tolerance: float = Field(0.05, gt=0, description="max mean |logprob diff| vLLM vs learner after sync")
    micro_batch_size: int = Field(16, ge=1)
    minibatches: int = Field(1, ge=1, description="optimizer steps per rollout batch (>1: the clip matters)")


class LearnerConfig(_Strict):
    backend: Literal["local", "fsdp2", "deepspeed"] = "local"
    world_size: int = Field(1, ge=1)
    zero_stage: Literal[2, 3] = 2
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _local_is_one_process(self):
        if self.backend == "local" and self.world_size != 1:
            raise ValueError("learner.world_size must be 1 with backend=local (use fsdp2 or deepspeed)")
        return self


class RunConfig(_Strict):
    steps: int = Field(3, ge=1)
    staleness: int = Field(0, ge=0, le=4, description="0 = synchronous and reproducible; 1-2 = async")
    seed: int = 0
    out_dir: str = "runs/rlvr"
    checkpoint_every: int = Field(0, ge=0, description="0 = only at the end")
    resume: bool = Field(True, description="continue from the newest checkpoint in out_dir if there is one")
    eval_every: int = Field(0, ge=0, description="0 = held-out eval only before the first and after the last step")
    eval_samples: int = Field(4, ge=1)
    ray_address: str | None = Field(None, description='None: attach to a running cluster or start a local one;'
                                    ' "local": always start a private local one')
    tensorboard: bool = True
    wandb_project: str | None = None


class RLVRConfig(_Strict):
    model: ModelConfig = Field(default_factory=ModelConfig)
    tasks: TaskConfig = Field(default_factory=TaskConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    reward: RewardWorkersConfig = Field(default_factory=RewardWorkersConfig)
    algo: AlgoConfig = Field(default_factory=AlgoConfig)
    learner: LearnerConfig = Field(default_factory=LearnerConfig)
    run: RunConfig = Field(default_factory=RunConfig)

    @model_validator(mode="after")
    def _check_paths(self):
        if self.model.lora_rank and self.learner.backend == "fsdp2":
            raise ValueError("model.lora_rank: LoRA is supported with learner.backend local or deepspeed, not fsdp2")
        if self.model.path != "tiny":
            p = Path(self.model.path)
            if not (p / "config.json").exists():
                raise ValueError(f"model.path: {p} has no config.json (not a Hugging Face checkpoint)")
            if not any((p / f).exists() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
                raise ValueError(f"model.path: {p} has no tokenizer (tokenizer.json / tokenizer_config.json);"
                                 " save the tokenizer next to the weights")
        if self.tasks.source != "embedded" and not Path(self.tasks.source).exists():
            raise ValueError(f"tasks.source: {self.tasks.source} does not exist")
        return self
