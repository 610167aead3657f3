"""SFT training: TRL's SFTTrainer on prompt-completion records (loss on completion tokens only), padding-free
best-fit packing (position ids restart per sample, so packed samples never attend to each other), PEFT
LoRA/QLoRA or full fine-tuning, DeepSpeed ZeRO-2/3 or FSDP2 under torchrun, eval every N steps, the newest N
checkpoints kept, cosine/WSD schedules, TensorBoard (W&B optional). LoRA runs end with a merged checkpoint."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from configs.loader import jsonl_rows
from configs.base import check_resume
from sft.config import SFTConfig, resume_settings

log = logging.getLogger(__name__)


class AllLabelsMaskedError(ValueError):
    """A batch with no completion token: its loss would be a silent 0 (or NaN)."""


def record_to_prompt_completion(row: dict, fmt: str, where: str, plain: bool = False) -> dict:
    """One JSONL row (chat `messages`, or Alpaca instruction/input/output) -> TRL's conversational
    prompt-completion form: every turn before the last assistant reply is prompt (masked). `plain` (Alpaca
    only): prompt and completion are plain strings that TRL joins without a template."""
    if fmt == "chat":
        messages = row.get("messages")
        if not isinstance(messages, list) or len(messages) < 2:
            raise ValueError(f"{where}: `messages` must be a list of at least two turns")
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant") \
                    or not isinstance(m.get("content"), str):
                raise ValueError(f"{where}: messages[{i}] needs a role (system/user/assistant) and string content")
        if messages[-1]["role"] != "assistant":
            raise ValueError(f"{where}: the last message must be the assistant's reply (it is what is trained)")
        return {"prompt": messages[:-1], "completion": messages[-1:]}
    missing = [k for k in ("instruction", "output") if not isinstance(row.get(k), str)]
    if missing:
        raise ValueError(f"{where}: Alpaca rows need string {missing}")
    user = row["instruction"] + ("\n\n" + row["input"] if row.get("input") else "")
    if plain:  # the prompt's trailing whitespace moves to the completion: prompts end at a token boundary,
        cut = len(user.rstrip())  # as in RLVR and evaluation (rollout.strip_prompt)
        return {"prompt": user[:cut], "completion": user[cut:] + row["output"]}
    return {"prompt": [{"role": "user", "content": user}],
            "completion": [{"role": "assistant", "content": row["output"]}]}


def read_records(path: Path, fmt: str, limit: int | None = None, plain: bool = False) -> list[dict]:
    if not path.exists():
        raise FileNotFoundError(f"{path}: no SFT data (run `python -m sft data` first)")
    rows = []
    for lineno, row in jsonl_rows(path):
        rows.append(record_to_prompt_completion(row, fmt, f"{path}:{lineno}", plain))
        if limit and len(rows) >= limit:
            break
    if not rows:
        raise ValueError(f"{path}: no records")
    return rows


def drop_unlearnable(rows: list[dict], tokenizer, max_length: int) -> tuple[list[dict], int]:
    """Records whose prompt fills the whole sequence would keep no completion token after truncation."""
    def prompt_length(prompt) -> int:
        if isinstance(prompt, str):  # plain text (model.chat_template=none)
            return len(tokenizer(prompt)["input_ids"])
        return len(tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True,
                                                 return_dict=True)["input_ids"])

    kept = [r for r in rows if prompt_length(r["prompt"]) < max_length - 1]
    return kept, len(rows) - len(kept)


def deepspeed_config(stage: int) -> dict:
    """ZeRO-2/3 for HF Trainer ("auto" values are filled from TrainingArguments)."""
    zero = {"stage": stage, "overlap_comm": True, "contiguous_gradients": True}
    if stage == 3:
        zero.update(stage3_gather_16bit_weights_on_model_save=True, stage3_param_persistence_threshold="auto",
                    stage3_prefetch_bucket_size="auto")
    return {"zero_optimization": zero, "bf16": {"enabled": "auto"}, "gradient_clipping": "auto",
            "train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto",
            "gradient_accumulation_steps": "auto"}


def training_arguments(cfg: SFTConfig, has_eval: bool):
    from trl import SFTConfig as TrlConfig

    t, gpu = cfg.train, torch.cuda.is_available()
    bf16 = t.bf16 if t.bf16 is not None else gpu
    extra: dict = {}
    if cfg.parallel.startswith("deepspeed"):
        extra["deepspeed"] = deepspeed_config(int(cfg.parallel[-1]))
    elif cfg.parallel == "fsdp":
        extra["fsdp"] = "full_shard auto_wrap"
        extra["fsdp_config"] = {"version": 2}  # accelerate wraps the model's _no_split_modules (its blocks)
    report = (["tensorboard"] if cfg.logging.tensorboard else []) + (["wandb"] if cfg.logging.wandb else [])
    return TrlConfig(
        output_dir=str(cfg.out_dir / "checkpoints"),
        num_train_epochs=t.epochs, max_steps=t.max_steps, learning_rate=t.lr, weight_decay=t.weight_decay,
        warmup_steps=t.warmup_ratio, lr_scheduler_type="constant_with_warmup" if t.schedule == "constant"
        else "cosine", per_device_train_batch_size=t.micro_batch_size, per_device_eval_batch_size=t.micro_batch_size,
        gradient_accumulation_steps=t.grad_accum, max_grad_norm=t.max_grad_norm, seed=t.seed, data_seed=t.seed,
        bf16=bf16, use_cpu=not gpu, max_length=t.max_length, packing=t.packing, packing_strategy="bfd",
        padding_free=t.packing, completion_only_loss=True, eval_strategy="steps" if has_eval else "no",
        eval_steps=cfg.eval.every,
        save_strategy="steps", save_steps=cfg.checkpoint.every, save_total_limit=cfg.checkpoint.keep,
        logging_steps=cfg.logging.every, logging_first_step=True, report_to=report or "none",
        gradient_checkpointing=cfg.model.gradient_checkpointing, dataloader_num_workers=0,
        disable_tqdm=False, **extra)


def _trainer_class():
    from transformers import get_wsd_schedule
    from trl import SFTTrainer

    class MaskedSFTTrainer(SFTTrainer):
        """SFTTrainer that refuses all-masked batches and knows the WSD schedule."""

        schedule: str = "cosine"
        decay_fraction: float = 0.2

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            labels = inputs.get("labels")
            if labels is not None and not bool((labels != -100).any()):
                raise AllLabelsMaskedError(
                    "a batch has every label masked (-100): it holds no completion token, so its loss would be a "
                    "silent zero; check that records have non-empty completions and that train.max_length leaves "
                    "room after the prompt")
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

        def create_scheduler(self, num_training_steps, optimizer=None):
            if self.schedule != "wsd" or self.lr_scheduler is not None:
                return super().create_scheduler(num_training_steps, optimizer)
            self.lr_scheduler = get_wsd_schedule(
                optimizer or self.optimizer, self.args.get_warmup_steps(num_training_steps),
                num_decay_steps=max(1, round(self.decay_fraction * num_training_steps)),
                num_training_steps=num_training_steps, decay_type="cosine")
            self._created_lr_scheduler = True
            return self.lr_scheduler

    return MaskedSFTTrainer


def build_trainer(cfg: SFTConfig, base: str, train_rows: list[dict], eval_rows: list[dict]):
    """The configured trainer and how many records were dropped as unlearnable (prompt too long)."""
    from datasets import Dataset

    from sft.model import load_for_training, upcast_trainable

    # the arguments come first: with ZeRO-3 they make from_pretrained partition the weights as it loads them
    args = training_arguments(cfg, bool(eval_rows))
    if cfg.parallel == "deepspeed_zero3":  # zero.Init sizes its partitions by DeepSpeed's world, set up first
        import deepspeed

        deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo")
    model, tokenizer, peft_config = load_for_training(cfg, base)
    train_rows, dropped = drop_unlearnable(train_rows, tokenizer, cfg.train.max_length)
    eval_rows, dropped_eval = drop_unlearnable(eval_rows, tokenizer, cfg.train.max_length)
    if not train_rows:
        raise ValueError(f"every training record's prompt is longer than train.max_length={cfg.train.max_length}")
    if not eval_rows:  # all of them were too long
        from transformers.trainer_utils import IntervalStrategy

        args.eval_strategy = IntervalStrategy.NO
    cls = _trainer_class()
    trainer = cls(model=model, args=args, processing_class=tokenizer,
                  train_dataset=Dataset.from_list(train_rows),
                  eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None, peft_config=peft_config)
    if cfg.train.method == "qlora" and not cfg.parallel.startswith("deepspeed"):
        # TRL casts QLoRA adapters to bf16; the optimizer needs fp32 masters (DeepSpeed keeps its own)
        upcast_trainable(trainer.model)
    if cfg.parallel == "fsdp" and int(os.environ.get("WORLD_SIZE", "1")) > 1 and not trainer.is_fsdp_enabled:
        # accelerate applies FSDP to CUDA devices only; on CPU it would quietly fall back to DDP
        raise ValueError("parallel=fsdp: accelerate shards with FSDP on GPUs only and this run has none; "
                         "use parallel=deepspeed_zero2 or deepspeed_zero3 on CPU")
    from transformers.integrations import TensorBoardCallback

    for callback in trainer.callback_handler.callbacks:  # its directory, without the process-wide env variable
        if isinstance(callback, TensorBoardCallback):
            callback.logging_dir = str(cfg.out_dir / "tensorboard")
    trainer.add_callback(_SettingsRecorder(resume_settings(cfg)))
    trainer.schedule, trainer.decay_fraction = cfg.train.schedule, cfg.train.decay_fraction
    trainer.records = {"train": len(train_rows), "eval": len(eval_rows)}
    return trainer, dropped + dropped_eval


SETTINGS = "crucible_settings.json"  # in each checkpoint-N: the settings it was trained under


def _latest_checkpoint(cfg: SFTConfig) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    ckpt_dir = cfg.out_dir / "checkpoints"
    return get_last_checkpoint(str(ckpt_dir)) if cfg.train.resume and ckpt_dir.is_dir() else None


def check_resume_settings(cfg: SFTConfig) -> list[str]:
    """The checkpoint a run would resume was trained under these settings, or the run stops naming each
    difference (train.resume=force: returned, for the log). A checkpoint without a record resumes unchecked."""
    latest = _latest_checkpoint(cfg)
    if latest is None:
        return []
    record = Path(latest) / SETTINGS
    recorded = json.loads(record.read_text()) if record.exists() else None
    return check_resume(recorded, resume_settings(cfg), latest, cfg.train.resume)


class _SettingsRecorder(TrainerCallback):
    """Writes the run's settings into each checkpoint HF's Trainer saves (rank 0)."""

    def __init__(self, settings: dict) -> None:
        self.settings = settings

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if ckpt.is_dir():
                (ckpt / SETTINGS).write_text(json.dumps(self.settings, indent=1))


def run_training(cfg: SFTConfig, base: str) -> dict:
    """Train; returns the summary (checkpoint, eval_loss_first, eval_loss_last, ...). Rank 0 writes files."""
    from sft.merge import merge_adapter

    fmt = cfg.data_format
    plain = cfg.model.chat_template == "none"
    train_rows = read_records(cfg.data_dir / f"train.{fmt}.jsonl", fmt, plain=plain)
    eval_rows = read_records(cfg.data_dir / f"eval.{fmt}.jsonl", fmt, cfg.eval.max_samples, plain) \
        if (cfg.data_dir / f"eval.{fmt}.jsonl").stat().st_size else []
    trainer, dropped = build_trainer(cfg, base, train_rows, eval_rows)
    rank0 = trainer.is_world_process_zero()
    resume = _latest_checkpoint(cfg)
    first_path = cfg.out_dir / "eval_first.json"  # the base model's eval loss survives a resume
    has_eval = trainer.eval_dataset is not None
    if has_eval and not first_path.exists():
        # evaluated inside train() (eval_on_start), where DeepSpeed/FSDP engines exist: an evaluate() call
        # before train() would prepare the model for inference only and break DeepSpeed's backward
        trainer.args.eval_on_start = True
        trainer.add_callback(_FirstEvalRecorder(first_path if rank0 else None))
    started = time.monotonic()
    result = trainer.train(resume_from_checkpoint=resume)
    seconds = time.monotonic() - started
    eval_last = None
    if has_eval:  # the final step's periodic eval when there was one, else one more
        done = [h["eval_loss"] for h in trainer.state.log_history
                if "eval_loss" in h and h.get("step") == trainer.state.global_step]
        eval_last = done[-1] if done else trainer.evaluate()["eval_loss"]
    eval_first = json.loads(first_path.read_text())["eval_loss"] if first_path.exists() else None
    final = cfg.out_dir / "final"
    adapter = None
    if cfg.train.method == "full":
        trainer.save_model(str(final))
    else:
        adapter = cfg.out_dir / "adapter"
        trainer.save_model(str(adapter))
    if torch.distributed.is_initialized():  # merging loads models, which must not wait on other ranks
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    if cfg.parallel == "deepspeed_zero3":  # else from_pretrained would build the merge model ZeRO-3-partitioned
        from transformers.integrations.deepspeed import unset_hf_deepspeed_config

        unset_hf_deepspeed_config()
    if rank0:
        trainer.processing_class.save_pretrained(str(adapter or final))
        if adapter is not None:
            merge_adapter(adapter, final, base=base)
        _write_metrics(cfg.out_dir / "metrics.jsonl", trainer.state.log_history)
    tokens = max((h.get("num_tokens", 0) for h in trainer.state.log_history), default=0)
    return {"checkpoint": str(final), "adapter": str(adapter) if adapter else None,
            "eval_loss_first": eval_first, "eval_loss_last": eval_last,
            "train_loss": round(result.training_loss, 6), "steps": trainer.state.global_step,
            "records": trainer.records, "dropped_prompt_too_long": dropped,
            "tokens_per_s": round(tokens / seconds, 1) if seconds > 0 and tokens else None,
            "seconds": round(seconds, 1), "resumed_from": resume,
            "world_size": int(os.environ.get("WORLD_SIZE", "1"))}


class _FirstEvalRecorder(TrainerCallback):
    """Keeps the first evaluation's loss (the base model's) in eval_first.json."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if self.path is not None and not self.path.exists() and metrics and "eval_loss" in metrics:
            self.path.write_text(json.dumps({"eval_loss": metrics["eval_loss"], "step": state.global_step}))


def _write_metrics(path: Path, history: list[dict]) -> None:
    with open(path, "w") as f:
        for row in history:
            f.write(json.dumps(row) + "\n")
