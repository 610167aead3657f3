"""The pretraining loop: one process, or one rank of a `torchrun` FSDP2 job.

Each step reads `grad_accum` packed micro-batches per rank, sums token losses and divides by the number of
target tokens in the whole global batch (so the loss is the same however the batch is split across micro-
batches and ranks), clips, sets each parameter group's LR from the schedule, steps Muon+AdamW, and updates
the MoE routers' balance biases. Evaluations, alerts and checkpoints hang off the step counter.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import time
import warnings
from pathlib import Path

import torch
import torch.distributed as dist

from pretrain import checkpoint, evaluate
from configs.base import check_resume
from pretrain.config import PretrainConfig, resume_settings
from pretrain.data import DocStore, LoaderConfigView, PackedLoader
from pretrain.isolation import measure_isolation, require_isolation
from pretrain.loss import install_chunked_head, token_losses
from pretrain.model import (MoeBalancer, attn_implementation, build_model, flops_per_token, load_pretrained,
                            num_params, packed_model_inputs)
from pretrain.monitor import LossSpikeDetector, Monitor, device_peak_tflops, mfu, peak_memory_gib
from pretrain.optim import build_optimizer, clip_grad_norm
from pretrain.schedule import lr_multiplier
from pretrain.stages import load_tokenizer, paths
from pretrain.tokenizer import fim_ids, token_byte_lengths
from pretrain.fim import FimSpecials


def process_group_backend(cuda: bool) -> str:
    """NCCL for CUDA tensors plus gloo for CPU ones: every collective of the trainer runs on device tensors,
    and the gloo half keeps a CPU tensor (a library's, a future counter) from killing the run at step 1 with
    "No backend type associated with device type cpu"."""
    return "cuda:nccl,cpu:gloo" if cuda else "gloo"


def init_distributed(parallel: str) -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    # one process without torchrun keeps the current GPU (a launcher may set LOCAL_RANK with one visible device)
    index = local_rank if parallel != "none" else (torch.cuda.current_device() if cuda else 0)
    device = torch.device("cuda", index) if cuda else torch.device("cpu")
    if cuda:  # before any CUDA work and before the process group: NCCL binds to the current device
        torch.cuda.set_device(device)
    if parallel == "none":
        if world > 1:
            raise ValueError("launched with WORLD_SIZE>1 but train.parallel=none: set train.parallel=fsdp2")
        return 0, 1, device
    if "RANK" not in os.environ:  # a single process without torchrun: a world of one on loopback
        from torch.distributed.elastic.utils.distributed import get_free_port

        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(get_free_port()))
    if not dist.is_initialized():
        # device_id: eager NCCL communicator init on the right GPU (no lazy init on the first collective)
        dist.init_process_group(process_group_backend(cuda), device_id=device if cuda else None)
    return dist.get_rank(), dist.get_world_size(), device


def base_load_dtype(cfg: PretrainConfig) -> torch.dtype:
    """The dtype a checkpoint's weights are materialised in: the training compute dtype for a frozen LoRA base
    (its weights are never updated, so fp32 would only double host and GPU memory: 128 GB for a 32B model),
    fp32 for weights that are trained (the optimizer's master copy; bf16 compute comes from autocast/FSDP)."""
    if cfg.init.lora_rank and cfg.train.dtype == "bfloat16":
        return torch.bfloat16
    return torch.float32


def make_model(cfg: PretrainConfig, tokenizer, device: torch.device):
    """Fresh from config, or an existing HF checkpoint (continued pretraining / long context, LoRA optional)."""
    if cfg.init.from_checkpoint:
        # streamed onto this rank's device shard by shard (meta-device init in transformers), never whole on host
        model = load_pretrained(cfg.init.from_checkpoint, cfg.model if cfg.model.yarn else None,
                                dtype=base_load_dtype(cfg), attn_implementation=attn_implementation(cfg.model),
                                device=device if device.type == "cuda" else None)
    else:
        model = build_model(cfg.model, len(tokenizer), tokenizer.eos_token_id)
    if cfg.init.lora_rank:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=cfg.init.lora_rank, lora_alpha=cfg.init.lora_alpha,
                                                 target_modules=cfg.init.lora_targets, lora_dropout=0.0))
    if cfg.train.activation_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if cfg.train.loss_chunk_tokens:
        install_chunked_head(model, cfg.train.loss_chunk_tokens)
    model.config.use_cache = False  # packed batches are only isolated without a KV cache
    # from_pretrained returns eval mode, and HF layers checkpoint activations (and MoE routers count loads)
    # only while `training`: without this a run from a checkpoint silently trains with neither
    model.train()
    return model.to(device)


def graph_breaks() -> int:
    from torch._dynamo.utils import counters

    return int(sum(counters["graph_break"].values()))


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
        if cfg.train.deterministic:  # before cuBLAS is first used: it reads the workspace setting once
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
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
        self.isolation: dict | None = None

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

    def save(self, loss: float | None = None, suspect: bool = False) -> Path:
        """A step checkpoint. `suspect` (taken at a loss spike) never counts as the pinned last-good one, and a
        non-finite loss is never saved (checkpoint.save refuses it)."""
        return checkpoint.save(self.ckpt_root, self.step, self.model, self.optimizer, self.extra_state(),
                               self.cfg.checkpoint.keep, self.engine, loss=loss, suspect=suspect,
                               settings=resume_settings(self.cfg))

    def maybe_resume(self) -> Path | None:
        found = checkpoint.step_dirs(self.ckpt_root)
        if not (self.cfg.checkpoint.resume and found):
            return None
        meta = checkpoint.read_meta(found[-1])
        # the settings it was trained under, before any weight is loaded (older checkpoints carry none)
        if diff := check_resume(meta["settings"], resume_settings(self.cfg), found[-1], self.cfg.checkpoint.resume):
            warnings.warn(f"checkpoint.resume=force: continuing {found[-1]} under changed settings: {'; '.join(diff)}",
                          stacklevel=2)
        if meta["suspect"]:
            warnings.warn(f"resuming from {found[-1]}, saved at a loss spike; the last good checkpoint is "
                          f"{checkpoint.last_good(self.ckpt_root)} (delete the newer ones to roll back)", stacklevel=2)
        extra = checkpoint.load(found[-1], self.model, self.optimizer, self.engine)
        if extra["world_size"] != self.world:
            raise ValueError(f"{found[-1]} was written by {extra['world_size']} ranks, this run has {self.world}")
        self.step, self.loss_ema = extra["step"], extra["loss_ema"]
        self.loader.load_state_dict(extra["loader"])
        self.spikes.load_state_dict(extra["spikes"])
        return found[-1]

    def model_inputs(self, batch: dict) -> dict:
        return packed_model_inputs(self.model, batch["input_ids"].to(self.device),
                                   batch["position_ids"].to(self.device))

    def autocast(self):
        """The training compute dtype for every forward, evaluations included (flash kernels reject fp32
        q/k/v). FSDP2 casts parameters itself (MixedPrecisionPolicy), so autocast stays off there."""
        enabled = self.cfg.train.dtype == "bfloat16" and self.cfg.train.parallel != "fsdp2"
        return torch.autocast(self.device.type, dtype=torch.bfloat16) if enabled else contextlib.nullcontext()

    def check_isolation(self) -> dict | None:
        """The packed-document isolation probe on a batch of the training shape (drawn from the validation
        split, so the training stream is untouched), before the first step. Every rank probes; any leak stops
        all of them."""
        if not self.cfg.train.isolation_probe:
            return None
        batch = self.val_loader().next_batch()

        def forward(b: dict) -> torch.Tensor:  # the training forward and loss, per token
            with self.autocast():
                return token_losses(self.model, self.model, self.model_inputs(b), b["labels"].to(self.device))

        vocab = min(len(self.tokenizer), self.model.get_input_embeddings().num_embeddings)
        report = measure_isolation(forward, batch, vocab, self.model.config._attn_implementation)
        leaked = torch.tensor(0.0 if report is None or report.isolated else 1.0, device=self.device)
        if dist.is_initialized():
            dist.all_reduce(leaked, op=dist.ReduceOp.MAX)
        require_isolation(report)
        if leaked.item():
            raise RuntimeError("another rank found packed documents attending to each other (see its log)")
        return report.as_dict() if report else None

    # -- one step ----------------------------------------------------------------------------------------
    def train_step(self) -> dict:
        cfg, fsdp = self.cfg, self.cfg.train.parallel == "fsdp2"
        t0 = time.perf_counter()
        batches = [self.loader.next_batch() for _ in range(cfg.data.grad_accum)]
        t_data = time.perf_counter()
        # Collective operands live on the training device: NCCL has no CPU tensors.
        num_targets = torch.tensor(sum(int((b["labels"] != -100).sum()) for b in batches), device=self.device)
        if dist.is_initialized():
            dist.all_reduce(num_targets)
        global_targets = int(num_targets.item())
        loss_sum = torch.zeros((), dtype=torch.float32, device=self.device)
        for i, batch in enumerate(batches):
            if fsdp:  # reduce-scatter gradients once, after the last micro-batch
                self.model.set_requires_gradient_sync(i == len(batches) - 1)
            labels = batch["labels"].to(self.device)
            with self.autocast():
                loss = token_losses(self.model, self.forward, self.model_inputs(batch), labels).sum()
            # FSDP2 averages gradients over ranks; x world turns that into the global sum / global tokens.
            scaled = loss * self.world / global_targets
            if self.engine is not None:
                self.engine.backward(scaled, scale_wrt_gas=False)
            else:
                scaled.backward()
            loss_sum += loss.detach().float()
        if dist.is_initialized():
            dist.all_reduce(loss_sum)
        loss = loss_sum.item() / global_targets  # waits for forward and backward
        t_compute = time.perf_counter()
        mult = lr_multiplier(self.step, cfg.train.steps, cfg.optim.schedule, cfg.optim.warmup_frac,
                             cfg.optim.warmdown_frac, cfg.optim.final_frac)
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * mult
        finite = math.isfinite(loss)  # the all-reduced loss: every rank takes the same branch
        if self.engine is not None:  # DeepSpeed clips (gradient_clipping) and steps its partitions
            if not finite:  # bf16 ZeRO has no overflow check (fp16 only): it would apply the NaN step
                raise RuntimeError(f"step {self.step + 1}: loss is {loss} under DeepSpeed, whose bf16 optimizer "
                                   "applies non-finite steps; stopped before it did. Resume from the last good "
                                   f"checkpoint: {checkpoint.last_good(self.ckpt_root)}")
            self.engine.step()
            grad_norm = float(self.engine.get_global_grad_norm() or 0.0)
        else:
            grad_norm = clip_grad_norm([p for p in self.model.parameters() if p.requires_grad], cfg.optim.grad_clip)
            # a NaN/inf loss or gradient (the norm is global: the same on every rank) would poison every weight
            finite = finite and math.isfinite(grad_norm)
            if finite:
                self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        metrics = self.balancer.step(apply=finite) if self.balancer else {}
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        # where a step's time goes (host-side data packing, forward+backward, optimizer + clipping): a GPU that
        # waits on the host shows up as data_s or as an optimizer_s out of proportion to its FLOPs
        metrics.update({"perf/data_s": t_data - t0, "perf/fwd_bwd_s": t_compute - t_data,
                        "perf/optimizer_s": time.perf_counter() - t_compute})
        return {"train/loss": loss, "train/grad_norm": grad_norm, "train/lr_multiplier": mult,
                "train/target_tokens": global_targets, "train/step_skipped": int(not finite), **metrics,
                **{f"lr/{g['name']}": g["lr"] for g in self.optimizer.param_groups}}

    # -- evaluation --------------------------------------------------------------------------------------
    def val_loader(self) -> PackedLoader:
        """Plain (no FIM) windows of the training shape from the validation split, from its start: what the
        evaluations and the isolation probe read (the training loader's state is never touched)."""
        cfg = self.cfg
        view = LoaderConfigView(cfg.data.seq_len, cfg.data.micro_batch_size, 0.0, 0.0, cfg.data.seed)
        return PackedLoader(self.val_store, self.tokenizer, view, self.specials, self.rank, self.world,
                            shuffle=False)

    def run_evals(self) -> dict:
        cfg = self.cfg
        val_loader = self.val_loader()
        per_rank = -(-cfg.eval.val_windows // self.world)
        with self.autocast():  # evaluations see the model in the training compute dtype
            metrics = evaluate.validation_bpb(self.model, val_loader, per_rank, self.token_bytes, self.model_inputs,
                                              device=self.device)
            if cfg.eval.fim_examples:
                texts = [self.val_store.text(i) for i in range(min(len(self.val_store), 4 * cfg.eval.fim_examples))]
                examples = evaluate.fim_examples(texts, cfg.eval.fim_examples, cfg.data.seed)
                metrics.update(evaluate.fim_exact_match(self.model, self.tokenizer, examples, self.specials,
                                                        cfg.data.seq_len, self.device))
            if cfg.eval.compile_prompts:
                tasks = evaluate.compile_eval_tasks(cfg.eval.compile_prompts, cfg.corpus.split)
                outs = evaluate.sample_completions(self.model, self.tokenizer, [t.prompt for t in tasks],
                                                   cfg.eval.compile_samples, cfg.eval.max_new_tokens,
                                                   cfg.eval.temperature, cfg.train.seed, self.device)
        if cfg.eval.compile_prompts and self.rank == 0:  # g++ in the sandbox: no model, no autocast
            metrics.update(evaluate.compile_rate(tasks, outs, cfg.eval.sandbox_backend))
        return metrics

    # -- the loop ----------------------------------------------------------------------------------------
    def fit(self) -> dict:
        cfg = self.cfg
        resumed = self.maybe_resume()
        monitor = Monitor(cfg.out_dir, cfg.train.steps, self.step, self.rank == 0, cfg.tensorboard,
                          cfg.wandb_project, cfg.model_dump(mode="json"), cfg.train.progress_every)
        # tokens per optimizer step on ONE device: MFU and tokens/s are per GPU (torchtitan's convention), so
        # they compare across world sizes
        tokens_per_device_step = cfg.data.seq_len * cfg.data.micro_batch_size * cfg.data.grad_accum
        alerts, recent_mfu, start_step = [], [], self.step
        timed_seconds, timed_steps = 0.0, 0  # steady state: the first step of a process (compile, warm-up) excluded
        breakdown: dict[str, float] = {}
        self.isolation = self.check_isolation()
        while self.step < cfg.train.steps:
            t0 = time.perf_counter()
            metrics = self.train_step()
            dt = time.perf_counter() - t0
            self.step += 1
            loss = metrics["train/loss"]
            finite = math.isfinite(loss)
            if finite:  # a NaN must not poison the average every later spike is judged against
                self.loss_ema = loss if self.loss_ema is None else 0.9 * self.loss_ema + 0.1 * loss
            step_mfu = mfu(self.flops_per_token, tokens_per_device_step / dt, self.peak_tflops)
            metrics.update({"train/loss_ema": self.loss_ema, "perf/tokens_per_s": tokens_per_device_step / dt,
                            "perf/mfu": step_mfu, "perf/step_s": dt, "perf/peak_memory_gib": peak_memory_gib()})
            if self.step > start_step + 1:  # the first step of a process pays for compile and warm-up
                timed_seconds, timed_steps = timed_seconds + dt, timed_steps + 1
                for key in ("data_s", "fwd_bwd_s", "optimizer_s"):
                    breakdown[key] = breakdown.get(key, 0.0) + metrics[f"perf/{key}"]
                recent_mfu.append(step_mfu)
            spike = self.spikes.update(loss)
            if metrics["train/step_skipped"]:  # train_step's verdict: a non-finite loss or gradient norm
                alerts.append(f"step {self.step}: loss {loss}, grad norm {metrics['train/grad_norm']}; the "
                              "optimizer step was skipped" + ("" if finite else " and no checkpoint is written"))
                monitor.warn(alerts[-1])
            elif spike:
                alerts.append(f"step {self.step}: loss {loss:.3f} spiked above {cfg.alerts.spike_factor}x its "
                              "recent average; checkpoint saved (suspect: the last good one stays pinned)")
                monitor.warn(alerts[-1])
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
            due = self.step % cfg.checkpoint.every == 0 or (self.step == cfg.train.steps and cfg.checkpoint.at_end)
            if finite and (spike or due):
                self.save(loss, suspect=spike)
            if self.step % cfg.train.log_every == 0 or self.step == cfg.train.steps:
                monitor.log(self.step, metrics)
        monitor.close()
        final = self.export()
        packer = self.loader.packer
        per_device = tokens_per_device_step * timed_steps / timed_seconds if timed_steps else None
        return {"checkpoint": str(final), "steps": self.step, "resumed_from": str(resumed) if resumed else None,
                "val_bpb": self.last_eval.get("val/bpb"), "fim_exact_match": self.last_eval.get(
                    "eval/fim_exact_match"), "compile_rate": self.last_eval.get("eval/compile_rate"),
                "train_loss_ema": self.loss_ema, "packing_efficiency": packer.stats.packing_efficiency(
                    packer.window), "fim_share": packer.stats.fim_docs / max(1, packer.stats.docs),
                "tokens_per_s": per_device * self.world if per_device else None,
                "tokens_per_s_per_device": per_device,
                "mfu": mfu(self.flops_per_token, per_device, self.peak_tflops) if per_device else None,
                "mfu_peak_source": self.peak_source, "peak_memory_gib": peak_memory_gib(),
                "attn_implementation": self.model.config._attn_implementation, "isolation": self.isolation,
                "grad_checkpointing": bool(getattr(self.model, "is_gradient_checkpointing", False)),
                "compile_graph_breaks": graph_breaks() if cfg.train.compile else None,
                "step_seconds": {k: v / timed_steps for k, v in breakdown.items()} if timed_steps else None,
                "params": self.params, "alerts": alerts, "world_size": self.world}

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
