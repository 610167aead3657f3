"""One data-parallel learner rank (a Ray actor): the policy wrapped by the configured backend, the GRPO
update over its shard of the batch, full-weight export for vLLM, and checkpoint save/load.

Backends: `local` (one process, plain torch), `fsdp2` (torch `fully_shard`, per decoder layer) and
`deepspeed` (ZeRO-2/3). All ranks run the same number of micro-batches because every backward is a
collective; a rank with fewer samples runs zero-weight padding micro-batches.
"""

from __future__ import annotations

import copy
import os
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from learner.grpo import grpo_loss, truncated_is_weights, warmup_factor
from pretrain.monitor import peak_memory_gib
from learner.config import RLVRConfig
from learner.policy import (clean_state_dict, first_completion_position, hf_weights, load_policy, pad_batch,
                            rollout_logprob_tensor, token_logprobs)
from rollout.types import TrainingSample
from rollout.weight_transfer import DTYPES, Address, Layout, ParamMeta, close, join, open_store, send


class LearnerWorker:
    def __init__(self, cfg: RLVRConfig, model_path: str, rank: int, world_size: int, master_port: int,
                 master_addr: str = "127.0.0.1") -> None:
        self.cfg, self.rank, self.world, self.model_path = cfg, rank, world_size, model_path
        algo, learner = cfg.algo, cfg.learner
        self.backend = learner.backend
        torch.set_num_threads(max(1, int(learner.cpus_per_worker)))
        # vLLM's workers run NCCL with cuMem off and every process in a group must agree (the weight transfer)
        os.environ.setdefault("NCCL_CUMEM_ENABLE", "0")
        seed = cfg.run.seed
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed)
        if self.backend != "local":
            # rank 0's node address and a port picked there (LearnerGroup): the ranks may be on different nodes
            os.environ.update(MASTER_ADDR=master_addr, MASTER_PORT=str(master_port), RANK=str(rank),
                              WORLD_SIZE=str(world_size), LOCAL_RANK="0")
            pg = "nccl" if torch.cuda.is_available() and learner.gpus_per_worker > 0 else "gloo"
            dist.init_process_group(pg, rank=rank, world_size=world_size)
        self.device = torch.device("cuda" if learner.gpus_per_worker > 0 and torch.cuda.is_available() else "cpu")
        m = cfg.model
        # model.dtype is the COMPUTE dtype. Trained weights stay fp32 (the optimizer's master copy) and bf16 comes
        # from autocast (local) or FSDP2's MixedPrecisionPolicy: at the GPU recipe's LR of 5e-7 an AdamW update
        # is ~1e-3 of a bf16 ulp for typical weights, so bf16-stored weights would not move at all. DeepSpeed's
        # bf16 mode keeps its own fp32 masters.
        self.bf16 = m.dtype == "bfloat16"
        load_dtype = policy_load_dtype(m.dtype, self.backend)
        model = load_policy(model_path, load_dtype, m.lora_rank, m.lora_alpha, m.lora_targets).to(self.device)
        if learner.activation_checkpointing:  # recompute each decoder layer in backward instead of storing it
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            if m.lora_rank:  # frozen embeddings: the checkpointed layers' inputs must still carry gradients
                model.enable_input_require_grads()
        # Log-probs of the distribution vLLM sampled from: softmax(logits / rollout.temperature).
        self.temperature = cfg.rollout.temperature
        self.tied = bool(getattr(model.config, "tie_word_embeddings", False))
        self.opt_steps = 0  # optimizer steps taken (the LR warmup's clock; checkpointed)
        self.version = 0  # policy version = steps done, trained or skipped (what the driver syncs by; checkpointed)
        self._store = None  # rank 0: the rendezvous of the weight transfer in progress
        self.pad_id = model.config.pad_token_id if model.config.pad_token_id is not None else 0
        self.ref = None
        if algo.kl_coef > 0 and not m.lora_rank:  # LoRA: the reference is the base with adapters off
            self.ref = copy.deepcopy(model).eval().requires_grad_(False)
            if self.bf16:  # frozen: no masters needed; bf16 halves its memory and matches the policy's compute
                self.ref = self.ref.to(torch.bfloat16)
        params = [p for p in model.parameters() if p.requires_grad]
        if self.backend == "deepspeed":
            import deepspeed

            opt = torch.optim.AdamW(params, lr=algo.lr, weight_decay=algo.weight_decay)
            ds_config = {"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1,
                         "zero_optimization": {"stage": learner.zero_stage}, "zero_allow_untested_optimizer": True,
                         "gradient_clipping": algo.grad_clip, "steps_per_print": 10**9,
                         # our micro-batch count varies per step: every step() is the accumulation boundary
                         "managed_gradient_accumulation": False,
                         "bf16": {"enabled": m.dtype == "bfloat16"}}
            self.engine, self.opt, _, _ = deepspeed.initialize(model=model, optimizer=opt, config=ds_config)
            self.model = self.engine.module
            self.forward_module = self.engine  # engine.forward advances ZeRO-3's micro-step (accumulate, not copy)
        else:
            if self.backend == "fsdp2":
                from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

                mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if self.bf16 \
                    else MixedPrecisionPolicy()
                for layer in _decoder_layers(model):
                    fully_shard(layer, mp_policy=mp)
                fully_shard(model, mp_policy=mp)
            self.model = self.forward_module = model
            self.opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=algo.lr,
                                         weight_decay=algo.weight_decay)
        if self.ref is not None:
            self.ref = self._shard_reference(self.ref)

    def _shard_reference(self, ref):
        """The frozen KL reference, sharded like the policy: FSDP2 shards it per decoder layer; ZeRO-3 partitions
        it in an optimizer-less DeepSpeed engine (as OpenRLHF does). With `local` and ZeRO-2 the policy's
        weights are whole on every rank too, and so is the reference."""
        if self.backend == "fsdp2":
            from torch.distributed.fsdp import fully_shard

            for layer in _decoder_layers(ref):
                fully_shard(layer)
            fully_shard(ref)
            return ref
        if self.backend == "deepspeed" and self.cfg.learner.zero_stage == 3:
            import deepspeed

            engine, *_ = deepspeed.initialize(model=ref, config={
                "train_micro_batch_size_per_gpu": 1, "zero_optimization": {"stage": 3}, "steps_per_print": 10**9,
                "bf16": {"enabled": self.bf16}})
            engine.eval()  # DeepSpeedEngine.eval() returns None
            return engine
        return ref

    def local_params(self) -> dict[str, int]:
        """Parameter elements this rank holds for the policy and the reference (a shard under FSDP2/ZeRO-3)."""
        def held(module) -> int:
            if module is None:
                return 0
            total = 0
            for p in module.parameters():
                if hasattr(p, "ds_tensor"):
                    total += p.ds_tensor.numel()
                elif hasattr(p, "to_local"):
                    total += p.to_local().numel()
                else:
                    total += p.numel()
            return total

        return {"policy": held(self.model), "reference": held(self.ref)}

    # ---- the update ---------------------------------------------------------------------------------
    def skip(self) -> None:
        """A step with nothing to train (every group dropped): the weights stay, the version still moves on,
        because the driver, the producer's staleness bound and the engines number policies by step."""
        self.version += 1

    def train(self, minibatches: list[list[TrainingSample]], tokens_per_minibatch: list[int],
              micro_per_minibatch: list[int]) -> dict:
        """One optimizer step per minibatch. `tokens_per_minibatch` are global completion-token counts (the
        loss denominator); every rank runs `micro_per_minibatch[i]` micro-batches."""
        algo = self.cfg.algo
        self.model.train()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        # Proximal ("old") logprobs come from the learner before any update of this step (decoupled PPO):
        # truncated IS then corrects vLLM-vs-learner numerics and staleness, the clip bounds this step.
        mbs = [self._micro_batches(batch, n) for batch, n in zip(minibatches, micro_per_minibatch)]
        with torch.no_grad():
            old = [[self._logprobs(mb)[0] for mb in micro] for micro in mbs]
            ref = [[self._ref_logprobs(mb) for mb in micro] for micro in mbs] if algo.kl_coef > 0 else None
        sums = {"loss": 0.0, "clip_fraction_sum": 0.0, "kl_sum": 0.0, "entropy_sum": 0.0, "mismatch_sum": 0.0,
                "tokens": 0.0, "is_weight_sum": 0.0}
        grad_norms = []
        for i, micro in enumerate(mbs):
            denom = tokens_per_minibatch[i] / self.world  # DP backends average gradients over ranks
            for j, mb in enumerate(micro):
                lp, ent = self._logprobs(mb, with_entropy=True)
                mask = mb["mask"]
                is_w = truncated_is_weights(old[i][j], mb["rollout_lp"], algo.is_cap)
                out = grpo_loss(lp, old[i][j], mb["adv"], mask, denom, algo.clip_low, algo.clip_high,
                                algo.kl_coef, ref[i][j] if ref else None, is_w, algo.dual_clip,
                                algo.log_ratio_clamp, algo.kl_clamp)
                self._backward(out.loss)
                sums["loss"] += out.loss.item() / self.world
                for k in ("clip_fraction_sum", "kl_sum"):
                    sums[k] += float(out.metrics.get(k, 0.0))
                sums["entropy_sum"] += float((ent * mask).sum())
                sums["mismatch_sum"] += float(((old[i][j] - mb["rollout_lp"]).abs() * mask).sum())
                sums["is_weight_sum"] += float((is_w * mask).sum())
                sums["tokens"] += float(mask.sum())
            grad_norms.append(self._step())
        sums["grad_norm"] = float(np.mean(grad_norms))
        sums["mem_peak_gb"] = peak_memory_gib()  # this step's on GPU (reset above); on CPU the rank's peak RSS
        self.version += 1
        return sums

    def _micro_batches(self, samples: list[TrainingSample], count: int) -> list[dict]:
        size = self.cfg.algo.micro_batch_size
        chunks = [samples[i : i + size] for i in range(0, len(samples), size)]
        while len(chunks) < count:  # padding micro-batch: any sample, zero weight
            chunks.append([(samples or self._dummy())[0].padding()])
        out = []
        for chunk in chunks:
            ids, attn, comp = pad_batch(chunk, self.pad_id)
            weight = torch.tensor([s.weight for s in chunk]).unsqueeze(1)
            out.append({"ids": ids.to(self.device), "attn": attn.to(self.device), "mask": (comp * weight).to(self.device),
                        "first": first_completion_position(chunk),
                        "adv": torch.tensor([s.advantage for s in chunk], device=self.device),
                        "rollout_lp": rollout_logprob_tensor(chunk, ids.shape[1]).to(self.device)})
        return out

    def _dummy(self) -> list[TrainingSample]:
        return [TrainingSample((self.pad_id,), (self.pad_id,), (0.0,), 0.0)]

    def _autocast(self, plain_module: bool = False):
        """bf16 compute over fp32 weights on the local backend (FSDP2 and DeepSpeed cast themselves), and for a
        `plain_module` on any backend (the frozen reference, never wrapped)."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16,
                              enabled=self.bf16 and (plain_module or self.backend == "local"))

    def _score(self, module, mb: dict, with_entropy: bool = False):
        """Sampled-token log-probs (and entropy) of `module` under the sampling temperature, completion
        positions only, chunked."""
        return token_logprobs(module, mb["ids"], mb["attn"], with_entropy, self.temperature, mb["first"],
                              self.cfg.learner.logprob_chunk_tokens)

    def _logprobs(self, mb: dict, with_entropy: bool = False):
        with self._autocast():
            return self._score(self.forward_module, mb, with_entropy)

    def _ref_logprobs(self, mb: dict) -> torch.Tensor:
        if self.ref is not None:
            with self._autocast(plain_module=True):
                return self._score(self.ref, mb)[0]
        with self._autocast():
            with self.model.disable_adapter():
                return self._score(self.model, mb)[0]

    def _backward(self, loss: torch.Tensor) -> None:
        if self.backend == "deepspeed":
            self.engine.backward(loss, scale_wrt_gas=False)
        else:
            loss.backward()

    def _step(self) -> float:
        # LR warmup: set before the step on the optimizer's groups (DeepSpeed's wrapper shares them).
        lr = self.cfg.algo.lr * warmup_factor(self.opt_steps, self.cfg.algo.warmup_steps)
        for group in self.opt.param_groups:
            group["lr"] = lr
        self.opt_steps += 1
        if self.backend == "deepspeed":
            self.engine.step()
            norm = self.engine.get_global_grad_norm()
            return float(norm) if norm is not None else 0.0
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.algo.grad_clip)
        if hasattr(norm, "full_tensor"):
            norm = norm.full_tensor()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return float(norm)

    # ---- weights out --------------------------------------------------------------------------------
    def export_state(self) -> dict[str, torch.Tensor] | None:
        """Full HF-named weights on rank 0 (None elsewhere). Collective: call on every rank together."""
        if self.backend == "fsdp2":
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

            state = get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
            return hf_weights(state, self.tied) if self.rank == 0 else None
        if self.backend == "deepspeed" and self.cfg.learner.zero_stage == 3:
            import deepspeed

            with deepspeed.zero.GatheredParameters(list(self.model.parameters()), modifier_rank=None):
                state = clean_state_dict(self.model, self.tied) if self.rank == 0 else None
            return state
        return clean_state_dict(self.model, self.tied) if self.rank == 0 else None

    def _named_weights(self) -> Iterator[tuple[str, torch.Tensor]]:
        """HF-named full weights, ONE AT A TIME, in `_weight_shapes` order, as the policy's current values (on
        rank 0; other ranks get the same names and must iterate along: each FSDP2 `full_tensor()` and ZeRO-3
        gather is a collective). Peak memory: one gathered parameter, never the model. LoRA merges into
        copies first (that path materialises the merged model on rank 0)."""
        if self.cfg.model.lora_rank:
            state = self.export_state()  # collective; None off rank 0, whose part is then done
            yield from (state or {}).items()
            return
        if self.backend == "deepspeed" and self.cfg.learner.zero_stage == 3:
            import deepspeed

            for name, param in self.model.named_parameters():
                with deepspeed.zero.GatheredParameters([param], modifier_rank=None):
                    yield name, param.data
            for name, buf in self._persistent_buffers():
                yield name, buf
            return
        for name, value in self.model.state_dict().items():
            if self.tied and name == "lm_head.weight":
                continue
            yield name, value.full_tensor() if hasattr(value, "full_tensor") else value

    def _named_weights_in_wire_dtype(self) -> Iterator[tuple[str, torch.Tensor]]:
        """`_named_weights` cast to what the engines hold: floating weights in model.dtype, integer buffers int64."""
        dtype = DTYPES[self.cfg.model.dtype]
        return ((n, t if t is None else t.to(dtype if t.is_floating_point() else torch.int64))
                for n, t in self._named_weights())

    def _persistent_buffers(self) -> list[tuple[str, torch.Tensor]]:
        keys = set(self.model.state_dict().keys())
        return [(n, b) for n, b in self.model.named_buffers() if n in keys]

    def _weight_shapes(self) -> list[tuple[str, tuple[int, ...], bool]]:
        """(name, full shape, is floating) of every exported weight, without gathering anything."""
        if self.cfg.model.lora_rank:  # merged weights: materialise once to learn them (collective)
            state = self.export_state() or {}
            return [(n, tuple(v.shape), v.is_floating_point()) for n, v in state.items()]
        if self.backend == "deepspeed" and self.cfg.learner.zero_stage == 3:
            out = [(n, tuple(getattr(p, "ds_shape", p.shape)), p.is_floating_point())
                   for n, p in self.model.named_parameters()]
            return out + [(n, tuple(b.shape), b.is_floating_point()) for n, b in self._persistent_buffers()]
        return [(n, tuple(v.shape), v.is_floating_point()) for n, v in self.model.state_dict().items()
                if not (self.tied and n == "lm_head.weight")]

    def weight_layout(self, bucket_bytes: int) -> Layout:
        """The metadata the engines need to receive the weights (names, wire dtypes, shapes, bucket size)."""
        dtype = self.cfg.model.dtype
        return Layout(tuple(ParamMeta(n, dtype if is_float else "int64", shape)
                            for n, shape, is_float in self._weight_shapes()), bucket_bytes)

    def open_transfer(self, receivers: int, timeout_s: float) -> Address | None:
        """Rank 0: bind the transfer's rendezvous on this node; returns where receivers connect."""
        if self.rank != 0:
            return None
        import ray

        host = ray.util.get_node_ip_address() if ray.is_initialized() else "127.0.0.1"
        self._store, port = open_store(host, receivers + 1, timeout_s)
        # NCCL when learner rank 0 and every engine worker own whole GPUs; colocated on one GPU (fractional GPUs)
        # NCCL refuses two ranks on one device, so the buckets go through host memory over gloo instead.
        nccl = (self.device.type == "cuda" and self.cfg.learner.gpus_per_worker >= 1
                and self.cfg.rollout.gpus_per_engine >= 1)
        return Address(host, port, receivers + 1, "nccl" if nccl else "gloo", timeout_s)

    def send_weights(self, address: Address | None, layout: Layout) -> tuple[str, int] | None:
        """Stream the weights to the engines (rank 0 sends; every rank gathers along). Returns rank 0's digest
        of the bytes sent and the policy version they are. Collective."""
        items = self._named_weights_in_wire_dtype()
        if self.rank != 0:
            for _ in items:  # the gathers are collectives: take part in every one
                pass
            return None
        pg = None
        try:
            device = self.device if address.backend == "nccl" else torch.device("cpu")
            pg = join(address, 0, self._store)
            digest = send(pg, items, layout, device)
        except BaseException:
            for _ in items:  # let the other ranks finish their gathers before failing
                pass
            raise
        finally:
            if pg is not None:
                close(pg)
            self._store = None
        return digest, self.version

    def node_id(self) -> str:
        import ray

        return ray.get_runtime_context().get_node_id()

    def master_weights(self) -> dict[str, torch.Tensor] | None:
        """The optimizer's fp32 weights on rank 0 (None elsewhere), model-named. Under DeepSpeed bf16 the module
        holds bf16 copies and the masters live in the optimizer; elsewhere the module's weights are the masters.
        Collective."""
        if self.backend != "deepspeed":
            return self.export_state()
        from deepspeed.utils import safe_get_full_fp32_param

        state = {n: safe_get_full_fp32_param(p) for n, p in self.model.named_parameters() if p.requires_grad}
        return {n: v.detach().float().cpu().clone() for n, v in state.items()} if self.rank == 0 else None

    def probe_logprobs(self, token_ids: list[int]) -> list[float]:
        """Learner's logprobs of a fixed sequence (compared with vLLM's after every sync). Collective. At
        temperature 1: vLLM's prompt log-probs, the other side of the probe, are raw whatever the sampler does."""
        self.model.eval()
        ids = torch.tensor([token_ids], device=self.device)
        with torch.no_grad(), self._autocast():
            lp, _ = token_logprobs(self.model, ids, torch.ones_like(ids))
        return lp[0].tolist()

    # ---- checkpoints --------------------------------------------------------------------------------
    def save(self, directory: str, policy_dir: str | None = None) -> None:
        """This rank's resume state; with `policy_dir`, rank 0 also writes the HF policy there (the weights are
        gathered on rank 0 one collective at a time; they never pass through the driver)."""
        if policy_dir is not None:
            from learner.checkpoint import save_hf_policy

            state = self.export_state()  # collective
            if self.rank == 0:
                save_hf_policy(state, self.model_path, policy_dir)
            del state
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        rng = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
               "opt_steps": self.opt_steps, "version": self.version}
        if self.backend == "deepspeed":
            self.engine.save_checkpoint(str(path / "deepspeed"), tag="state")
        elif self.backend == "fsdp2":
            import torch.distributed.checkpoint as dcp
            from torch.distributed.checkpoint.state_dict import get_state_dict

            model_sd, optim_sd = get_state_dict(self.model, self.opt)
            dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(path / "dcp"))
        else:
            torch.save({"model": self.model.state_dict(), "optim": self.opt.state_dict()}, path / "learner.pt")
        torch.save(rng, path / f"rng_rank{self.rank}.pt")

    def load(self, directory: str, version: int | None = None) -> None:
        """This rank's resume state; `version` (the driver's record of the checkpoint's policy version) wins over
        the one saved with the rank, so checkpoints written before ranks recorded it resume too."""
        path = Path(directory)
        if self.backend == "deepspeed":
            self.engine.load_checkpoint(str(path / "deepspeed"), tag="state")
        elif self.backend == "fsdp2":
            import torch.distributed.checkpoint as dcp
            from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

            model_sd, optim_sd = get_state_dict(self.model, self.opt)
            state = {"model": model_sd, "optim": optim_sd}
            dcp.load(state, checkpoint_id=str(path / "dcp"))
            set_state_dict(self.model, self.opt, model_state_dict=state["model"], optim_state_dict=state["optim"])
        else:
            state = torch.load(path / "learner.pt", weights_only=False)
            self.model.load_state_dict(state["model"])
            self.opt.load_state_dict(state["optim"])
        rng = torch.load(path / f"rng_rank{self.rank}.pt", weights_only=False)
        torch.set_rng_state(rng["torch"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
        self.opt_steps = rng.get("opt_steps", 0)
        self.version = version if version is not None else rng.get("version", 0)

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


def policy_load_dtype(compute_dtype: str, backend: str) -> str:
    """The dtype the trained weights are stored in: fp32 masters whenever the compute dtype is bf16, except under
    DeepSpeed, whose bf16 engine converts the module and keeps fp32 master partitions itself."""
    if compute_dtype == "bfloat16" and backend != "deepspeed":
        return "float32"
    return compute_dtype


def _decoder_layers(model) -> list[torch.nn.Module]:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return list(base.model.layers)

