"""The pretraining stage's one typed config. Presets: configs/pretrain/*.yaml; `key=value` overrides on the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from configs.base import StrictModel, check_lineage, flat_settings
from pretrain.corpus import CorpusConfig
from pretrain.model import ModelConfig
from pretrain.optim import OptimConfig


class TokenizerConfig(StrictModel):
    vocab_size: int = Field(4096, ge=300, le=1 << 20)
    max_train_bytes: int | None = Field(200_000_000, ge=1, description="train the BPE on at most this much text")


class DataConfig(StrictModel):
    seq_len: int = Field(512, ge=32, description="tokens per packed window")
    micro_batch_size: int = Field(8, ge=1, description="windows per forward on each rank")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step on each rank")
    fim_rate: float = Field(0.5, ge=0, le=1, description="share of documents turned into fill-in-the-middle")
    spm_rate: float = Field(0.5, ge=0, le=1, description="share of FIM documents in SPM (else PSM) order")
    max_doc_tokens: int | None = Field(None, ge=16, description="longer documents are cut; default seq_len - 16")
    shard_tokens: int = Field(50_000_000, ge=1000)
    seed: int = 0


class TrainConfig(StrictModel):
    steps: int = Field(100, ge=1)
    parallel: Literal["none", "fsdp2", "deepspeed"] = Field(
        "none", description="fsdp2 / deepspeed (ZeRO-2): run under torchrun (gloo on CPU, NCCL on GPU)")
    dtype: Literal["float32", "bfloat16"] = Field("float32", description="bfloat16 on GPU: FSDP2 mixed precision")
    activation_checkpointing: bool = False
    compile: bool = Field(False, description="torch.compile each decoder layer")
    loss_chunk_tokens: int = Field(0, ge=0, description="cross-entropy over this many tokens at a time inside the "
                                   "output head (full-vocabulary logits never materialised for the whole batch); "
                                   "0 = plain logits")
    deterministic: bool = Field(False, description="deterministic kernels (torch.use_deterministic_algorithms, "
                                "cuBLAS workspace): bit-exact reruns and resumes on GPU, at some speed; use an "
                                "attention implementation with a deterministic backward (eager) for bit-exactness")
    isolation_probe: bool = Field(True, description="before the first step, check on a real batch that packed "
                                  "documents do not attend to each other (pretrain.isolation); refuse to train if so")
    seed: int = 0
    log_every: int = Field(1, ge=1)
    progress_every: int = Field(0, ge=0, description="when stderr is not a terminal (a log file, a Ray job), one "
                                "progress line every N logged steps (0: about every 5 % of the run)")
    peak_tflops: float | None = Field(
        None, gt=0, description="device peak for MFU; default: a table of GPUs, or 0.1 TFLOP/s per CPU core")


class EvalConfig(StrictModel):
    every: int = Field(50, ge=1, description="validation BPB (and the other evals) every N steps and at the end")
    val_windows: int = Field(32, ge=1, description="validation windows per BPB measurement (per run, not rank)")
    fim_examples: int = Field(16, ge=0, description="held-out middles for FIM exact-match (0 = off)")
    compile_prompts: int = Field(8, ge=0, description="embedded C++ prompts sampled for compile rate (0 = off)")
    compile_samples: int = Field(2, ge=1)
    max_new_tokens: int = Field(96, ge=1)
    temperature: float = Field(0.8, gt=0)
    sandbox_backend: Literal["bwrap", "docker"] = "bwrap"


class CheckpointConfig(StrictModel):
    every: int = Field(50, ge=1)
    keep: int = Field(3, ge=1, description="keep the newest N step checkpoints")
    resume: bool | Literal["force"] = Field(True, description="continue from the newest checkpoint in out_dir if "
                                           "there is one; one trained under other settings (RESUME_IGNORES lists what "
                                           "may change) is refused with the differences unless 'force'")
    at_end: bool = Field(True, description="also checkpoint the last step (the final HF export is always written)")


class AlertConfig(StrictModel):
    spike_factor: float = Field(2.0, gt=1, description="loss above factor x its recent average: warn + checkpoint")
    spike_window: int = Field(20, ge=2)
    mfu_floor: float = Field(0.0, ge=0, le=1, description="warn when MFU drops below this")
    compile_rate_floor: float = Field(0.0, ge=0, le=1)


class InitConfig(StrictModel):
    from_checkpoint: str | None = Field(None, description="HF checkpoint dir: continued pretraining / long context")
    lora_rank: int = Field(0, ge=0, description=">0: train LoRA adapters (PEFT) on a frozen base")
    lora_alpha: int = Field(32, ge=1)
    lora_targets: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class PretrainConfig(StrictModel):
    out_dir: Path = Path("runs/pretrain")
    corpus: CorpusConfig = Field(default_factory=CorpusConfig)
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    alerts: AlertConfig = Field(default_factory=AlertConfig)
    init: InitConfig = Field(default_factory=InitConfig)
    tensorboard: bool = True
    wandb_project: str | None = None

    @model_validator(mode="after")
    def _check(self) -> "PretrainConfig":
        if self.data.seq_len > self.model.context and not self.init.from_checkpoint:
            raise ValueError(f"data.seq_len={self.data.seq_len} exceeds model.context={self.model.context}")
        if self.init.lora_rank and not self.init.from_checkpoint:
            raise ValueError("init.lora_rank needs init.from_checkpoint (LoRA adapts an existing model)")
        if self.train.parallel == "deepspeed" and self.optim.name != "adamw":
            raise ValueError("train.parallel=deepspeed needs optim.name=adamw: ZeRO flattens parameters into "
                             "partitions, and Muon orthogonalises whole matrices (use fsdp2 for Muon)")
        max_doc = self.data.max_doc_tokens
        if max_doc is not None and max_doc + 4 > self.data.seq_len:
            raise ValueError("data.max_doc_tokens must leave 4 tokens for FIM sentinels + EOS (<= seq_len - 4)")
        if self.init.from_checkpoint and Path(self.init.from_checkpoint).is_dir():
            check_lineage(self.init.from_checkpoint, self.corpus.split, "corpus.split")
        return self

    @property
    def max_doc_tokens(self) -> int:
        return self.data.max_doc_tokens or self.data.seq_len - 16  # room for FIM's sentinels + re-tokenisation


# What may change when pretraining resumes without changing what it trains: its length (extending a run; the
# WSD warmdown moves with it), output, checkpointing, evaluation, alerts and logging, speed/memory switches.
# Everything else is recorded in each checkpoint's meta.json.
RESUME_IGNORES = ("out_dir", "checkpoint.", "eval.", "alerts.", "tensorboard", "wandb_project", "train.steps",
                  "train.log_every", "train.peak_tflops", "train.progress_every", "train.isolation_probe",
                  "train.compile", "train.activation_checkpointing", "train.loss_chunk_tokens")


def resume_settings(cfg: PretrainConfig) -> dict:
    return flat_settings(cfg.model_dump(mode="json"), RESUME_IGNORES)
