"""The pretraining loop: one process, or one rank of a `torchrun` FSDP2 job.

Each step reads `grad_accum` packed micro-batches per rank, sums token losses and divides by the number of
target tokens in the whole global batch (so the loss is the same however the batch is split across micro-
batches and ranks), clips, sets each parameter group's LR from the schedule, steps Muon+AdamW, and updates
the MoE routers' balance biases. Evaluations, alerts and checkpoints hang off the step counter.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

from pretrain import checkpoint, evaluate
from pretrain.config import PretrainConfig
from pretrain.data import DocStore, LoaderConfigView, PackedLoader
from pretrain.model import (MoeBalancer, build_model, flops_per_token, load_pretrained, num_params,
                            packed_attention_masks)
from pretrain.monitor import LossSpikeDetector, Monitor, device_peak_tflops, peak_memory_gib
from pretrain.optim import build_optimizer, clip_grad_norm
from pretrain.schedule import lr_multiplier
from pretrain.stages import load_tokenizer, paths
from pretrain.tokenizer import fim_ids, token_byte_lengths
from pretrain.fim import FimSpecials


def init_distributed(parallel: str) -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if parallel == "none":
        if world > 1:
            raise ValueError("launched with WORLD_SIZE>1 but train.parallel=none: set train.parallel=fsdp2")
        return 0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if "RANK" not in os.environ:  # a single process without torchrun: a world of one on loopback
        from torch.distributed.elastic.utils.distributed import get_free_port

        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(get_free_port()))
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    rank = dist.get_rank()
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        return rank, dist.get_world_size(), torch.device("cuda")
    return rank, dist.get_world_size(), torch.device("cpu")


def make_model(cfg: PretrainConfig, tokenizer, device: torch.device):
    """Fresh from config, or an existing HF checkpoint (continued pretraining / long context, LoRA optional)."""
    if cfg.init.from_checkpoint:
        model = load_pretrained(cfg.init.from_checkpoint, cfg.model if cfg.model.yarn else None)
    else:
        model = build_model(cfg.model, len(tokenizer), tokenizer.eos_token_id)
    if cfg.init.lora_rank:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=cfg.init.lora_rank, lora_alpha=cfg.init.lora_alpha,
                                                 target_modules=cfg.init.lora_targets, lora_dropout=0.0))
    if cfg.train.activation_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False  # packed batches are only isolated per document without a KV cache
    return model.to(device)


def shard_model(model, cfg: PretrainConfig) -> None:
    """FSDP2: each decoder layer is its own unit (its all-gather overlaps the previous layer's compute)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) \
        if cfg.train.dtype == "bfloat16" else MixedPrecisionPolicy()
    for layer in _decoder_layers(model):
        fully_shard(layer, mp_policy=mp)
    fully_shard(model, mp_policy=mp)


def _decoder_layers(model):
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return list(base.model.layers)


class Trainer:
    def __init__(self, cfg: PretrainConfig) -> None:
        self.cfg = cfg
        self.rank, self.world, self.device = init_distributed(cfg.train.parallel)
        torch.manual_seed(cfg.train.seed)
        self.tokenizer = load_tokenizer(cfg)
        self.specials = FimSpecials(**fim_ids(self.tokenizer)) if cfg.data.fim_rate > 0 or cfg.eval.fim_examples \
            else FimSpecials(self.tokenizer.eos_token_id, -1, -1, -1)
        self.model = make_model(cfg, self.tokenizer, self.device)
        self.flops_per_token = flops_per_token(self.model, cfg.data.seq_len)
        self.params = num_params(self.model)
        if cfg.train.compile:
            for layer in _decoder_layers(self.model):
                layer.compile()
        if cfg.train.parallel == "fsdp2":
            shard_model(self.model, cfg)
        self.optimizer = build_optimizer(self.model, cfg.optim)
        self.engine, self.forward = None, self.model
        if cfg.train.parallel == "deepspeed":
            self.engine, self.optimizer = self._deepspeed()
            self.forward = self.engine  # gradients accumulate into ZeRO's partitions through the engine
        rate = cfg.model.moe.bias_update_rate if cfg.model.moe else 0.0
        self.balancer = MoeBalancer(self.model, rate) if rate > 0 else None
        p = paths(cfg)
        view = LoaderConfigView(cfg.data.seq_len, cfg.data.micro_batch_size, cfg.data.fim_rate, cfg.data.spm_rate,
                                cfg.data.seed)
        self.train_store, self.val_store = DocStore(p.train), DocStore(p.val)
        self.loader = PackedLoader(self.train_store, self.tokenizer, view, self.specials, self.rank, self.world)
        self.token_bytes = torch.from_numpy(token_byte_lengths(self.tokenizer))
        self.spikes = LossSpikeDetector(cfg.alerts.spike_factor, cfg.alerts.spike_window)
        self.step, self.loss_ema, self.last_eval = 0, None, {}
        self.ckpt_root = cfg.out_dir / "checkpoints"
        self.peak_tflops, self.peak_source = device_peak_tflops(cfg.train.peak_tflops)

    def _deepspeed(self):
        import deepspeed

        cfg = self.cfg
        ds_config = {"train_micro_batch_size_per_gpu": cfg.data.micro_batch_size, "gradient_accumulation_steps": 1,
                     "zero_optimization": {"stage": 2}, "zero_allow_untested_optimizer": True,
                     "gradient_clipping": cfg.optim.grad_clip, "steps_per_print": 10**9,
                     # we run grad_accum micro-batches and call step() once: every step() is the boundary
                     "managed_gradient_accumulation": False, "bf16": {"enabled": cfg.train.dtype == "bfloat16"}}
        engine, optimizer, _, _ = deepspeed.initialize(model=self.model, optimizer=self.optimizer, config=ds_config)
        return engine, optimizer

    # -- state -------------------------------------------------------------------------------------------
    def extra_state(self) -> dict:
        return {"step": self.step, "loader": self.loader.state_dict(), "loss_ema": self.loss_ema,
                "spikes": self.spikes.state_dict(), "world_size": self.world}

    def save(self) -> Path:
        return checkpoint.save(self.ckpt_root, self.step, self.model, self.optimizer, self.extra_state(),
                               self.cfg.checkpoint.keep, self.engine)

    def maybe_resume(self) -> Path | None:
        found = checkpoint.step_dirs(self.ckpt_root)
        if not (self.cfg.checkpoint.resume and found):
            return None
        extra = checkpoint.load(found[-1], self.model, self.optimizer, self.engine)
        if extra["world_size"] != self.world:
            raise ValueError(f"{found[-1]} was written by {extra['world_size']} ranks, this run has {self.world}")
        self.step, self.loss_ema = extra["step"], extra["loss_ema"]
        self.loader.load_state_dict(extra["loader"])
        self.spikes.load_state_dict(extra["spikes"])
        return found[-1]

    def model_inputs(self, batch: dict) -> dict:
        inputs = {"input_ids": batch["input_ids"].to(self.device), "position_ids": batch["position_ids"].to(self.device)}
        masks = packed_attention_masks(self.model, inputs["position_ids"])
        return inputs if masks is None else {**inputs, "attention_mask": masks}

    # -- one step ----------------------------------------------------------------------------------------
    def train_step(self) -> dict:
        cfg, fsdp = self.cfg, self.cfg.train.parallel == "fsdp2"
        batches = [self.loader.next_batch() for _ in range(cfg.data.grad_accum)]
        num_targets = torch.tensor(sum(int((b["labels"] != -100).sum()) for b in batches))
        if dist.is_initialized():
            dist.all_reduce(num_targets)
        loss_sum = torch.zeros((), dtype=torch.float64)
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16,
                                  enabled=cfg.train.dtype == "bfloat16" and not fsdp)
        for i, batch in enumerate(batches):
            if fsdp:  # reduce-scatter gradients once, after the last micro-batch
                self.model.set_requires_gradient_sync(i == len(batches) - 1)
            with autocast:
                logits = self.forward(**self.model_inputs(batch)).logits
            loss = F.cross_entropy(logits.float().flatten(0, 1), batch["labels"].to(self.device).flatten(),
                                   ignore_index=-100, reduction="sum")
            # FSDP2 averages gradients over ranks; x world turns that into the global sum / global tokens.
            scaled = loss * self.world / num_targets.item()
            if self.engine is not None:
                self.engine.backward(scaled, scale_wrt_gas=False)
            else:
                scaled.backward()
            loss_sum += loss.detach().double().cpu()
        if dist.is_initialized():
            dist.all_reduce(loss_sum)
        mult = lr_multiplier(self.step, cfg.train.steps, cfg.optim.schedule, cfg.optim.warmup_frac,
                             cfg.optim.warmdown_frac, cfg.optim.final_frac)
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * mult
        if self.engine is not None:  # DeepSpeed clips (gradient_clipping) and steps its partitions
            self.engine.step()
            grad_norm = float(self.engine.get_global_grad_norm() or 0.0)
        else:
            grad_norm = clip_grad_norm([p for p in self.model.parameters() if p.requires_grad], cfg.optim.grad_clip)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        metrics = self.balancer.step() if self.balancer else {}
        loss = loss_sum.item() / num_targets.item()
        return {"train/loss": loss, "train/grad_norm": grad_norm, "train/lr_multiplier": mult,
                "train/target_tokens": int(num_targets), **metrics,
                **{f"lr/{g['name']}": g["lr"] for g in self.optimizer.param_groups}}

    # -- evaluation --------------------------------------------------------------------------------------
    def run_evals(self) -> dict:
        cfg = self.cfg
        view = LoaderConfigView(cfg.data.seq_len, cfg.data.micro_batch_size, 0.0, 0.0, cfg.data.seed)
        val_loader = PackedLoader(self.val_store, self.tokenizer, view, self.specials, self.rank, self.world,
                                  shuffle=False)
        per_rank = -(-cfg.eval.val_windows // self.world)
        metrics = evaluate.validation_bpb(self.model, val_loader, per_rank, self.token_bytes, self.model_inputs)
        if cfg.eval.fim_examples:
            texts = [self.val_store.text(i) for i in range(min(len(self.val_store), 4 * cfg.eval.fim_examples))]
            examples = evaluate.fim_examples(texts, cfg.eval.fim_examples, cfg.data.seed)
            metrics.update(evaluate.fim_exact_match(self.model, self.tokenizer, examples, self.specials,
                                                    cfg.data.seq_len, self.device))
        if cfg.eval.compile_prompts:
            tasks = evaluate.compile_eval_tasks(cfg.eval.compile_prompts)
            outs = evaluate.sample_completions(self.model, self.tokenizer, [t.prompt for t in tasks],
                                               cfg.eval.compile_samples, cfg.eval.max_new_tokens,
                                               cfg.eval.temperature, cfg.train.seed, self.device)
            if self.rank == 0:
                metrics.update(evaluate.compile_rate(tasks, outs, cfg.eval.sandbox_backend))
        return metrics

    # -- the loop ----------------------------------------------------------------------------------------
    def fit(self) -> dict:
        cfg = self.cfg
        resumed = self.maybe_resume()
        monitor = Monitor(cfg.out_dir, cfg.train.steps, self.step, self.rank == 0, cfg.tensorboard,
                          cfg.wandb_project, cfg.model_dump(mode="json"))
        tokens_per_step = cfg.data.seq_len * cfg.data.micro_batch_size * cfg.data.grad_accum * self.world
        alerts, recent_mfu, train_seconds, start_step = [], [], 0.0, self.step
        while self.step < cfg.train.steps:
            t0 = time.perf_counter()
            metrics = self.train_step()
            dt = time.perf_counter() - t0
            train_seconds += dt
            self.step += 1
            loss = metrics["train/loss"]
            self.loss_ema = loss if self.loss_ema is None else 0.9 * self.loss_ema + 0.1 * loss
            mfu = self.flops_per_token * tokens_per_step / dt / (self.peak_tflops * 1e12 * self.world) \
                if self.peak_tflops else 0.0
            metrics.update({"train/loss_ema": self.loss_ema, "perf/tokens_per_s": tokens_per_step / dt,
                            "perf/mfu": mfu, "perf/step_s": dt, "perf/peak_memory_gib": peak_memory_gib()})
            spike = self.spikes.update(loss)
            if spike:
                alerts.append(f"step {self.step}: loss {loss:.3f} spiked above {cfg.alerts.spike_factor}x its "
                              "recent average; checkpoint saved")
                monitor.warn(alerts[-1])
            if self.step > start_step + 1:  # the first step of a process pays for warm-up
                recent_mfu.append(mfu)
            if self.step % cfg.eval.every == 0 or self.step == cfg.train.steps:
                mean_mfu = sum(recent_mfu) / max(1, len(recent_mfu))
                if recent_mfu and mean_mfu < cfg.alerts.mfu_floor:
                    alerts.append(f"step {self.step}: mean MFU {mean_mfu:.3f} since the last eval is below the "
                                  f"floor {cfg.alerts.mfu_floor}")
                    monitor.warn(alerts[-1])
                recent_mfu.clear()
                self.last_eval = self.run_evals()
                metrics.update(self.last_eval)
                rate = self.last_eval.get("eval/compile_rate")
                if rate is not None and rate < cfg.alerts.compile_rate_floor:
                    alerts.append(f"step {self.step}: compile rate {rate:.3f} below floor "
                                  f"{cfg.alerts.compile_rate_floor}")
                    monitor.warn(alerts[-1])
            if spike or self.step % cfg.checkpoint.every == 0 or self.step == cfg.train.steps:
                self.save()
            if self.step % cfg.train.log_every == 0 or self.step == cfg.train.steps:
                monitor.log(self.step, metrics)
        monitor.close()
        final = self.export()
        packer = self.loader.packer
        return {"checkpoint": str(final), "steps": self.step, "resumed_from": str(resumed) if resumed else None,
                "val_bpb": self.last_eval.get("val/bpb"), "fim_exact_match": self.last_eval.get(
                    "eval/fim_exact_match"), "compile_rate": self.last_eval.get("eval/compile_rate"),
                "train_loss_ema": self.loss_ema, "packing_efficiency": packer.stats.packing_efficiency(
                    packer.window), "fim_share": packer.stats.fim_docs / max(1, packer.stats.docs),
                "tokens_per_s": tokens_per_step * (self.step - start_step) / max(train_seconds, 1e-9),
                "mfu_peak_source": self.peak_source, "params": self.params, "alerts": alerts,
                "world_size": self.world}

    def export(self) -> Path:
        """The final model in plain HF format (+ tokenizer): LoRA merged, FSDP2 shards gathered on rank 0."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        out = self.cfg.out_dir / "final"
        state = get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if self.rank == 0:
            tmp = out.with_name("final.partial")
            model = self.model
            if hasattr(model, "merge_and_unload"):
                model.load_state_dict(state)
                model, state = model.merge_and_unload(), None
            model.save_pretrained(tmp, state_dict=state)
            self.tokenizer.save_pretrained(tmp)
            shutil.rmtree(out, ignore_errors=True)
            tmp.rename(out)
        if dist.is_initialized():
            dist.barrier()
        return out
