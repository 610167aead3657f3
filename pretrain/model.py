"""Models built from config as `transformers` classes, so every checkpoint loads in vLLM, PEFT and TRL unchanged.

- dense: Qwen3 (GQA, RoPE, RMSNorm, SwiGLU, QK-norm) or Llama;
- moe:   GLM-4-MoE (shared expert, grouped top-k routing, and a per-expert correction bias for
         auxiliary-loss-free load balancing, DeepSeek-V3 §2.1.2 — `MoeBalancer` updates it after each step);
- sinks: gpt-oss (learned attention sinks, alternating sliding/full attention, MoE).
YaRN (Peng et al. 2023) is written into the HF config's `rope_parameters` so every loader applies it.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator


class YarnConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    factor: float = Field(4.0, gt=1.0, description="context extension factor (e.g. 32k -> 128k is 4)")
    original_max_position_embeddings: int = Field(8192, ge=16, description="the context the model was trained at")


class MoeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    num_experts: int = Field(8, ge=2)
    experts_per_token: int = Field(2, ge=1)
    num_shared_experts: int = Field(1, ge=0)
    expert_intermediate_size: int = Field(256, ge=1)
    num_groups: int = Field(1, ge=1, description="grouped top-k: experts split into groups, tokens pick topk_groups")
    topk_groups: int = Field(1, ge=1)
    first_dense_layers: int = Field(0, ge=0, description="leading layers with a dense MLP")
    bias_update_rate: float = Field(1e-3, ge=0, description="gamma of the aux-loss-free bias update (0 = off)")

    @model_validator(mode="after")
    def _check(self) -> "MoeConfig":
        if self.experts_per_token > self.num_experts:
            raise ValueError("moe.experts_per_token must be <= moe.num_experts")
        if self.num_experts % self.num_groups or self.topk_groups > self.num_groups:
            raise ValueError("moe.num_groups must divide num_experts and be >= moe.topk_groups")
        return self


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    arch: Literal["dense", "moe", "sinks"] = "dense"
    family: Literal["qwen3", "llama"] = Field("qwen3", description="dense class")
    hidden_size: int = Field(128, ge=8)
    num_layers: int = Field(2, ge=1)
    num_heads: int = Field(4, ge=1)
    num_kv_heads: int = Field(2, ge=1, description="GQA: query heads share these key/value heads")
    head_dim: int = Field(32, ge=4)
    intermediate_size: int = Field(384, ge=1)
    context: int = Field(512, ge=16, description="max_position_embeddings")
    rope_theta: float = Field(10000.0, gt=0)
    yarn: YarnConfig | None = None
    tie_embeddings: bool = False
    sliding_window: int = Field(128, ge=1, description="sinks arch: window of its sliding-attention layers")
    moe: MoeConfig | None = None
    attn_implementation: Literal["sdpa", "eager", "flex_attention", "flash_attention_2", "flash_attention_3"] | None = \
        Field(None, description="how packed documents are kept apart, chosen per preset and never by what happens "
              "to be installed: sdpa (a block-diagonal mask from the restarting position ids; materialises T x T), "
              "flex_attention (a sparse block-causal document mask), flash_attention_2/3 (varlen over cu_seqlens "
              "computed per batch), eager. Default: sdpa (eager for the sinks arch)")
    init_std: float = Field(0.02, gt=0)

    @model_validator(mode="after")
    def _check(self) -> "ModelConfig":
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"model.num_kv_heads={self.num_kv_heads} must divide num_heads={self.num_heads}")
        if self.arch in ("moe", "sinks") and self.moe is None:
            self.moe = MoeConfig()
        if self.arch == "sinks" and self.attn_implementation == "sdpa":
            raise ValueError("model.attn_implementation=sdpa: gpt-oss (arch sinks) has no SDPA path in "
                             "transformers; use eager, flex_attention or flash_attention_2")
        return self


def attn_implementation(cfg: ModelConfig) -> str:
    """The configured attention implementation. Not "whatever is importable": flash-attn being installed used to
    switch a preset to a path that mixed packed documents. `packed_model_inputs` gives every path what it needs
    to keep documents apart, and `pretrain.isolation` checks at run time that it does."""
    if cfg.attn_implementation is not None:
        return cfg.attn_implementation
    return "eager" if cfg.arch == "sinks" else "sdpa"


FLASH_IMPLEMENTATIONS = ("flash_attention_2", "flash_attention_3")


def cu_seqlens(position_ids: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Document boundaries of a packed batch [B, T] flattened to one row of B*T tokens: the int32 cumulative
    lengths flash-attn's varlen kernels take, and the longest document. Every window starts a document (the
    packer restarts positions at each window's first token), and so does every position id 0."""
    flat = position_ids.reshape(-1)
    starts = (flat == 0).nonzero().flatten()
    if starts.numel() == 0 or int(starts[0]) != 0:
        raise ValueError("packed batch: every window must start a document (position id 0 at its first token)")
    ends = torch.cat([starts[1:], torch.tensor([flat.numel()], device=flat.device)])
    cu = torch.cat([torch.zeros(1, dtype=torch.int32, device=flat.device), ends.to(torch.int32)])
    return cu, int((ends - starts).max())


def packed_model_inputs(model, input_ids: torch.Tensor, position_ids: torch.Tensor) -> dict:
    """Forward kwargs that keep attention inside each packed document, for every attention implementation:

    - flash_attention_2/3: the micro-batch is flattened to one row and the document boundaries are passed as
      `cu_seq_lens_q/k` (transformers derives them from position ids only for a batch of one, so windows of a
      micro-batch > 1 would otherwise attend across rows' documents);
    - gpt-oss (sinks) without flash: explicit per-layer-type masks (its HF code ignores position ids);
    - sdpa / eager / flex_attention on Qwen3, Llama, GLM-4-MoE: transformers builds the document mask from the
      restarting position ids itself (a block-causal BlockMask for flex, a dense T x T mask for sdpa/eager).
    Logits come back [1, B*T, V] on the flash path; callers flatten tokens, so the order matches labels."""
    impl = model.config._attn_implementation
    if impl in FLASH_IMPLEMENTATIONS:
        cu, longest = cu_seqlens(position_ids)
        return {"input_ids": input_ids.reshape(1, -1), "position_ids": position_ids.reshape(1, -1),
                "cu_seq_lens_q": cu, "cu_seq_lens_k": cu, "max_length_q": longest, "max_length_k": longest}
    inputs = {"input_ids": input_ids, "position_ids": position_ids}
    masks = packed_attention_masks(model, position_ids)
    return inputs if masks is None else {**inputs, "attention_mask": masks}


def packed_attention_masks(model, position_ids: torch.Tensor) -> dict | None:
    """Explicit per-layer-type masks keeping attention inside each packed document, for the models whose HF
    code does not derive them from restarting position ids (gpt-oss builds its masks without position_ids;
    Qwen3/Llama/GLM-MoE do it themselves, and flash-attn varlen needs no mask). None when not needed."""
    config = model.config
    if config.model_type != "gpt_oss" or config._attn_implementation in FLASH_IMPLEMENTATIONS:
        return None
    doc = (position_ids == 0).cumsum(-1)  # [B, T]: document index of each position
    q = torch.arange(position_ids.shape[-1], device=position_ids.device)
    causal_same_doc = (doc[:, :, None] == doc[:, None, :]) & (q[None, :, None] >= q[None, None, :])
    sliding = causal_same_doc & (q[None, :, None] - q[None, None, :] < config.sliding_window)
    dtype = next(model.parameters()).dtype
    additive = lambda allowed: torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(  # noqa: E731
        ~allowed, torch.finfo(dtype).min)[:, None]
    return {"full_attention": additive(causal_same_doc), "sliding_attention": additive(sliding)}


def hf_config(cfg: ModelConfig, vocab_size: int, eos_id: int):
    from transformers import GptOssConfig, Glm4MoeConfig, LlamaConfig, Qwen3Config

    rope = {"rope_type": "default", "rope_theta": cfg.rope_theta}
    if cfg.yarn:
        rope = {"rope_type": "yarn", "rope_theta": cfg.rope_theta, "factor": cfg.yarn.factor,
                "original_max_position_embeddings": cfg.yarn.original_max_position_embeddings}
    common = dict(
        vocab_size=vocab_size, hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads, max_position_embeddings=cfg.context,
        rope_parameters=rope, tie_word_embeddings=cfg.tie_embeddings, initializer_range=cfg.init_std,
        eos_token_id=eos_id, pad_token_id=eos_id, bos_token_id=None, use_cache=False)
    if cfg.arch == "dense":
        cls = Qwen3Config if cfg.family == "qwen3" else LlamaConfig
        return cls(**common, head_dim=cfg.head_dim, intermediate_size=cfg.intermediate_size)
    moe = cfg.moe
    if cfg.arch == "moe":
        return Glm4MoeConfig(
            **common, head_dim=cfg.head_dim, intermediate_size=cfg.intermediate_size,
            moe_intermediate_size=moe.expert_intermediate_size, n_routed_experts=moe.num_experts,
            num_experts_per_tok=moe.experts_per_token, n_shared_experts=moe.num_shared_experts,
            n_group=moe.num_groups, topk_group=moe.topk_groups, first_k_dense_replace=moe.first_dense_layers,
            norm_topk_prob=True, use_qk_norm=True, num_mtp_layers=0)
    return GptOssConfig(
        **common, head_dim=cfg.head_dim, intermediate_size=moe.expert_intermediate_size,
        num_local_experts=moe.num_experts, num_experts_per_tok=moe.experts_per_token,
        sliding_window=cfg.sliding_window)


def build_model(cfg: ModelConfig, vocab_size: int, eos_id: int, dtype: torch.dtype = torch.float32):
    from transformers import AutoModelForCausalLM

    config = hf_config(cfg, vocab_size, eos_id)
    model = AutoModelForCausalLM.from_config(config, attn_implementation=attn_implementation(cfg), dtype=dtype)
    return model


def load_pretrained(path: str, long_context: ModelConfig | None = None, dtype: torch.dtype = torch.float32,
                    attn_implementation: str | None = None, device: torch.device | str | None = None):
    """An existing HF checkpoint (continued pretraining). With `long_context.yarn` set, YaRN scaling and the
    longer context are written into its config, so the saved model carries them into vLLM/PEFT/TRL.
    `dtype` is the dtype the weights are materialised in (bf16 for a frozen LoRA base: a 32B base is 64 GB
    instead of 128 GB); `device` streams the safetensors shards straight onto that device (transformers loads
    on the meta device first, so no full host copy per rank)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(path)
    if long_context is not None and long_context.yarn is not None:
        theta = (getattr(config, "rope_parameters", None) or {}).get("rope_theta", long_context.rope_theta)
        config.rope_parameters = {"rope_type": "yarn", "rope_theta": theta, "factor": long_context.yarn.factor,
                                  "original_max_position_embeddings":
                                      long_context.yarn.original_max_position_embeddings}
        config.max_position_embeddings = long_context.context
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    if device is not None:
        kwargs["device_map"] = {"": torch.device(device)}
    return AutoModelForCausalLM.from_pretrained(path, config=config, dtype=dtype, **kwargs)


def num_params(model, active: bool = True) -> dict[str, int]:
    """Parameter counts: total, embedding (input + untied output), and active non-embedding per token (MoE)."""
    cfg = model.config
    total = sum(p.numel() for p in model.parameters())
    emb = model.get_input_embeddings().weight.numel()
    out = model.get_output_embeddings()
    if out is not None and out.weight is not model.get_input_embeddings().weight:
        emb += out.weight.numel()
    experts = sum(p.numel() for n, p in model.named_parameters() if ".experts." in n and "shared" not in n)
    num_experts = getattr(cfg, "n_routed_experts", None) or getattr(cfg, "num_local_experts", None)
    active_experts = experts * cfg.num_experts_per_tok / num_experts if num_experts else experts
    return {"total": total, "embedding": emb,
            "active_non_embedding": int(total - emb - experts + (active_experts if active else experts))}


def training_flops_per_token(active_non_embedding: int, vocab: int, hidden: int, layers: int, heads: int,
                             head_dim: int, seq_len: int) -> int:
    """Training (forward + backward) FLOPs per token: 6 x (active non-embedding params + vocab x hidden)
    + 12 x layers x heads x head_dim x seq_len.

    The output head (vocab x hidden) is one matmul per token whether or not its weight is tied to the input
    embedding, so it is counted once; the input embedding is a lookup and is not (torchtitan
    `get_num_flop_per_token`, nanochat `estimate_flops`). The attention term is the PaLM (appendix B) /
    torchtitan convention: QK^T and AV over the full seq_len, not the ~seq_len/2 a causal mask actually needs,
    so MFU stays comparable with those reports."""
    matmul_params = active_non_embedding + vocab * hidden
    return 6 * matmul_params + 12 * layers * heads * head_dim * seq_len


def flops_per_token(model, seq_len: int) -> int:
    """`training_flops_per_token` of a built model. `num_params`' active_non_embedding already leaves out both
    the input embedding and an untied output head (and counts only the routed experts a token runs), so the
    head is added back here exactly once, tied or not."""
    cfg = model.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    out = model.get_output_embeddings()
    vocab, hidden = out.weight.shape if out is not None else (cfg.vocab_size, cfg.hidden_size)
    return training_flops_per_token(num_params(model)["active_non_embedding"], vocab, hidden,
                                    cfg.num_hidden_layers, cfg.num_attention_heads, head_dim, seq_len)


class MoeBalancer:
    """Auxiliary-loss-free load balancing (DeepSeek-V3): after each optimizer step, every router's correction
    bias moves by `rate` toward balance: b_i += rate * sign(mean_load - load_i). Counts come from forward hooks
    on the routers and are summed over data-parallel ranks first, so every rank applies the same update."""

    def __init__(self, model, rate: float) -> None:
        self.rate = rate
        self.routers = [m for m in model.modules() if hasattr(m, "e_score_correction_bias")]
        # Counters live on the routers' device: NCCL all-reduces only device tensors, and a .cpu() per router
        # per micro-batch would also synchronise the GPU every layer.
        self.loads = {id(r): torch.zeros(r.e_score_correction_bias.numel(), device=r.e_score_correction_bias.device)
                      for r in self.routers}
        self._hooks = [r.register_forward_hook(self._count) for r in self.routers]

    def _count(self, module, inputs, output) -> None:
        # Count training forwards only: not evaluation or the isolation probe (no grad), not activation-checkpoint
        # recomputation in backward. A probe's counts would shift the first bias update after every (re)start and
        # break exact resume.
        if not module.training or not torch.is_grad_enabled() or torch._C._current_graph_task_id() != -1:
            return
        topk_indices = output[2]
        n = module.e_score_correction_bias.numel()
        load = self.loads[id(module)]
        load += torch.bincount(topk_indices.flatten().to(load.device), minlength=n).to(load.dtype)

    def step(self, apply: bool = True) -> dict[str, float]:
        """Apply the bias update (not when `apply` is False: a skipped optimizer step); returns the max/mean load
        imbalance seen this step (1.0 = balanced). Collective: every rank calls it with the same `apply`."""
        if not self.routers:
            return {}
        loads = torch.stack([self.loads[id(r)] for r in self.routers])
        if torch.distributed.is_initialized():
            torch.distributed.all_reduce(loads)
        imbalance = (loads.max(dim=1).values / loads.mean(dim=1).clamp_min(1e-9)).mean().item()
        if apply:
            with torch.no_grad():
                for router, load in zip(self.routers, loads):
                    bias = router.e_score_correction_bias
                    bias += (self.rate * torch.sign(load.mean() - load)).to(bias.device, bias.dtype)
        for r in self.routers:
            self.loads[id(r)].zero_()
        return {"moe/load_imbalance": imbalance}
