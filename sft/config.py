"""SFTConfig: one typed config for `python -m sft` (data, base model, fine-tuning method, training loop,
distribution, checkpoints, logging). Presets live in configs/sft/*.yaml; every field is validated here."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from configs.base import StrictModel, check_lineage, flat_settings
from pretrain.model import ModelConfig
from sft.dataset import DataConfig


class ScratchBase(StrictModel):
    """A base model built here when `model.name_or_path` is unset (the embedded default): a byte-level BPE
    trained on the SFT training texts and a randomly initialised HF model of this shape."""

    vocab_size: int = Field(1024, ge=300, description="BPE vocabulary of the scratch tokenizer")
    arch: ModelConfig = Field(default_factory=lambda: ModelConfig(
        hidden_size=128, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=32, intermediate_size=384,
        context=1024))
    seed: int = 0


class SFTModelConfig(StrictModel):
    name_or_path: str | None = Field(None, description="HF model id or directory; unset: build `scratch`")
    scratch: ScratchBase = Field(default_factory=ScratchBase)
    chat_template: Literal["auto", "builtin", "none"] = Field(
        "auto", description="auto: the tokenizer's own template, the built-in one when it has none; none: no "
                            "template, the prompt is plain text continued by the completion (code completion, "
                            "as pretraining and raw-mode rewards see it; needs data_format=alpaca)")
    attn_implementation: str | None = Field(None, description="e.g. flash_attention_2 on GPU; default sdpa")
    gradient_checkpointing: bool = False


TargetPreset = Literal["attention", "mlp", "all-linear"]


class LoraSettings(StrictModel):
    rank: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    targets: TargetPreset | list[str] = Field(
        "all-linear", description="attention | mlp | all-linear, or explicit module-name suffixes")


class TrainSettings(StrictModel):
    method: Literal["full", "lora", "qlora"] = "lora"
    epochs: float = Field(1.0, gt=0)
    max_steps: int = Field(-1, ge=-1, description="-1: run `epochs`")
    lr: float = Field(2e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    schedule: Literal["cosine", "wsd", "constant"] = "cosine"
    decay_fraction: float = Field(0.2, gt=0, le=1, description="wsd: share of steps in the final decay")
    micro_batch_size: int = Field(4, ge=1)
    grad_accum: int = Field(1, ge=1)
    max_length: int = Field(1024, ge=16, description="tokens per (packed) sequence")
    packing: bool = Field(True, description="padding-free best-fit packing; position ids restart per sample")
    max_grad_norm: float = Field(1.0, gt=0)
    seed: int = 0
    bf16: bool | None = Field(None, description="default: on when a CUDA GPU is present")
    resume: bool | Literal["force"] = Field(True, description="continue from the newest checkpoint in "
                                           "out_dir/checkpoints; one trained under other settings (RESUME_IGNORES "
                                           "lists what may change) is refused with the differences unless 'force'")


class EvalSettings(StrictModel):
    every: int = Field(50, ge=1, description="eval loss every N optimizer steps")
    max_samples: int | None = Field(None, ge=1, description="cap on eval samples")


class CheckpointSettings(StrictModel):
    every: int = Field(100, ge=1)
    keep: int = Field(3, ge=1, description="keep the newest N checkpoints")


class LoggingSettings(StrictModel):
    every: int = Field(10, ge=1)
    tensorboard: bool = True
    wandb: bool = False


class SFTConfig(StrictModel):
    out_dir: Path = Field(Path("runs/sft-tiny-cpu"))
    data: DataConfig = Field(default_factory=DataConfig)
    data_format: Literal["chat", "alpaca"] = Field("chat", description="which JSONL of the data dir to train on")
    model: SFTModelConfig = Field(default_factory=SFTModelConfig)
    lora: LoraSettings = Field(default_factory=LoraSettings)
    train: TrainSettings = Field(default_factory=TrainSettings)
    parallel: Literal["none", "deepspeed_zero2", "deepspeed_zero3", "fsdp"] = Field(
        "none", description="multi-process sharding under torchrun / accelerate launch")
    eval: EvalSettings = Field(default_factory=EvalSettings)
    checkpoint: CheckpointSettings = Field(default_factory=CheckpointSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)

    @model_validator(mode="after")
    def _check(self) -> "SFTConfig":
        if self.model.chat_template == "none" and self.data_format == "chat":
            raise ValueError("model.chat_template=none trains plain prompt -> completion text, which chat rows "
                             "(several turns) do not have; set data_format=alpaca")
        if self.train.method == "qlora" and self.parallel in ("deepspeed_zero3", "fsdp"):
            raise ValueError(f"train.method=qlora with parallel={self.parallel}: 4-bit weights are not sharded "
                             "here; use parallel=none or deepspeed_zero2")
        if self.model.name_or_path and Path(self.model.name_or_path).is_dir():  # a hub id has no stage record
            check_lineage(self.model.name_or_path, self.data.split, "data.split")
        return self

    @property
    def data_dir(self) -> Path:
        return self.out_dir / "data"

    @property
    def base_dir(self) -> Path:
        """Where a scratch base model (and tokenizer) is saved, so merge/compare can load it."""
        return self.out_dir / "base"


# What may change when SFT resumes without changing what it trains: output, checkpointing, evaluation, logging.
RESUME_IGNORES = ("out_dir", "checkpoint.", "eval.", "logging.", "train.resume")


def resume_settings(cfg: SFTConfig) -> dict:
    return flat_settings(cfg.model_dump(mode="json"), RESUME_IGNORES)
