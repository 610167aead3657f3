"""Optimizer for pretraining: Muon for hidden weight matrices, AdamW for everything else, in ONE
`torch.optim.Optimizer` (so `state_dict()` / `load_state_dict()` and torch.distributed.checkpoint's
`get_optimizer_state_dict` / `set_optimizer_state_dict` see a single object), FSDP2-aware.

Muon (Keller Jordan 2024, https://kellerjordan.github.io/posts/muon/): Nesterov momentum, then the update is
orthogonalised by a quintic Newton–Schulz iteration (approximately U V^T of its SVD) and applied with
decoupled weight decay. The math is torch.optim.Muon's (2.13) exactly (tested against it):
    buf = lerp(buf, g, 1 - momentum); u = lerp(g, buf, momentum) if nesterov else buf
    O = NS5(u); p *= 1 - lr * wd; p -= lr * sqrt(max(1, rows / cols)) * O
The shape-aware factor is Keller Jordan's / nanochat's `sqrt(max(1, rows/cols))` (torch's
`adjust_lr_fn="original"`), not Moonlight's RMS-matching `0.2 * sqrt(max(rows, cols))` (Liu et al. 2025,
"Muon is Scalable for LLM Training", arXiv:2502.16982), so `lr_matrix` is a Muon-scale lr (~0.02), not an
AdamW one. Rows/cols are the last two dims as stored (nn.Linear: [out, in]); gpt-oss stores its fused
experts as [E, in, out], for which the factor is computed on the transposed orientation.
Differences from torch.optim.Muon, which is why we do not just subclass it: it accepts only 2-D params; we
also take fused MoE expert tensors [E, rows, cols] (leading dims = a batch of matrices, each orthogonalised
on its own), DTensor (FSDP2) params, and run Newton–Schulz in float32 off-GPU (torch always uses bf16).

FSDP2 (`fully_shard`): params and grads are DTensors sharded on dim 0, but Newton–Schulz needs the whole
matrix. Per matrix we all-gather the momentum-updated gradient (`full_tensor()`), orthogonalise it on every
rank, and keep this rank's slice of the result (a local split, no communication). Momentum stays a DTensor
sharded like the param, so DCP checkpoints reshard it. Cost per step: one extra all-gather of every matrix
(same volume as FSDP's forward param all-gather, in grad dtype) and every rank runs Newton–Schulz on every
matrix (world_size-fold redundant compute). Exception: fused expert tensors [E, r, c] sharded on E hold
whole matrices locally and are orthogonalised where they are, with no communication. A production version
would round-robin matrices across ranks, each orthogonalising 1/world of them and scattering the results
(Moonlight's distributed Muon, Liu et al. 2025, Sec. 2.3); not implemented here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import Tensor, nn
from torch.distributed.tensor import DTensor, Shard, distribute_tensor

__all__ = ["OptimConfig", "MuonAdamW", "GROUPS", "WIDTH_SCALED_GROUPS", "classify_params", "build_optimizer",
           "width_lr_scale", "clip_grad_norm", "zeropower_via_newtonschulz", "NS_COEFFICIENTS"]

# Keller Jordan's quintic: maximal slope at 0; singular values end up in ~0.7..1.2, not exactly 1
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NS_EPS = 1e-7  # as torch.optim.Muon
GROUPS = ("matrix", "embedding", "unembedding", "norm", "scalar")
# MoE router modules: DeepseekV3 / Glm4Moe / Qwen3Moe / Mixtral `mlp.gate`, gpt-oss `mlp.router`
_ROUTER_MODULE_NAMES = {"gate", "router"}
# nanochat's reference width for its AdamW lrs: lr * (hidden_size / 768) ** -0.5
WIDTH_REFERENCE = 768
# the AdamW groups whose lr adamw_width_scaling scales; "matrix" is not scaled (nanochat does not scale Muon's
# lr: its orthogonalised update has a fixed spectral scale whatever the width)
WIDTH_SCALED_GROUPS = ("embedding", "unembedding", "norm", "scalar")


class OptimConfig(BaseModel):
    """Optimizer and LR-schedule settings for pretraining."""

    model_config = ConfigDict(extra="forbid")

    name: Literal["muon", "adamw"] = Field(
        "muon", description="muon: Muon for hidden matrices + AdamW for the rest; "
        "adamw: AdamW for everything (matrices at lr_adamw)")
    lr_matrix: float = Field(0.015, gt=0, description="Muon lr for hidden matrices (before the shape factor)")
    lr_embedding: float = Field(0.2, gt=0, description="AdamW lr for the input embedding")
    lr_unembedding: float = Field(0.003, gt=0, description="AdamW lr for the output head (if not tied)")
    lr_norm: float = Field(
        3e-3, gt=0, description="AdamW lr for norm gains (RMSNorm/LayerNorm incl. q_norm/k_norm) and MoE "
        "routers. These are O(1) multiplicative gains on every activation that passes through them, and "
        "routing logits: an AdamW step moves each element by ~lr whatever the gradient's size (the first "
        "step by exactly lr * sign(g)), so at lr 0.4 one step changes a gain initialised at 1 by 40% "
        "(q_norm x k_norm scale attention logits by ~1.4^2 = 2x), three flip its sign, and a router's "
        "expert choice can flip in one step. Llama/OLMo-style runs train norms at the base AdamW lr, "
        "~1e-3..3e-3, with no weight decay (none here either); 3e-3 is the top of that range. nanochat's "
        "0.4 scalar lr was for residual mixing scalars in a model without learnable norms")
    lr_scalar: float = Field(0.4, gt=0, description="AdamW lr for the remaining < 2-D params: biases, "
                             "attention sinks, other true scalars (not norms or routers: lr_norm)")
    adamw_width_scaling: bool = Field(
        False, description="multiply the AdamW lrs of the embedding/unembedding/norm/scalar groups by "
        "(hidden_size / 768) ** -0.5, as nanochat does for its embedding/unembedding lrs, so lrs tuned at "
        "width 768 carry over to wider models (hidden_size from model.config)")
    lr_adamw: float = Field(3e-4, gt=0, description="AdamW lr for hidden matrices when name=adamw")
    weight_decay: float = Field(0.1, ge=0, description="decoupled (p *= 1 - lr*wd), hidden matrices only")
    betas: tuple[float, float] = Field((0.9, 0.95), description="AdamW betas, each in [0, 1)")
    eps: float = Field(1e-8, gt=0, description="AdamW epsilon")
    momentum: float = Field(0.95, ge=0, lt=1, description="Muon momentum")
    nesterov: bool = Field(True, description="Nesterov momentum for Muon")
    ns_steps: int = Field(5, ge=1, le=20, description="Newton–Schulz iterations")
    schedule: Literal["wsd", "cosine"] = Field("wsd", description="LR schedule (pretrain.schedule)")
    warmup_frac: float = Field(0.02, ge=0, le=1, description="fraction of steps with linear warmup")
    warmdown_frac: float = Field(0.3, ge=0, le=1, description="wsd: fraction of steps with linear warmdown")
    final_frac: float = Field(0.1, ge=0, le=1, description="LR multiplier at the last step")
    grad_clip: float = Field(1.0, ge=0, description="max global grad norm; 0 disables clipping")

    @field_validator("betas")
    @classmethod
    def _betas_in_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= b < 1.0 for b in v):
            raise ValueError(f"betas must each be in [0, 1), got {v}")
        return v

    @model_validator(mode="after")
    def _windows_fit(self) -> OptimConfig:
        if self.schedule == "wsd" and self.warmup_frac + self.warmdown_frac > 1.0:
            raise ValueError(f"warmup_frac + warmdown_frac must be <= 1 for schedule=wsd, "
                             f"got {self.warmup_frac} + {self.warmdown_frac}")
        return self


def zeropower_via_newtonschulz(g: Tensor, steps: int = 5, dtype: torch.dtype = torch.float32,
                               eps: float = NS_EPS) -> Tensor:
    """Approximately orthogonalise `g` (U S' V^T with S' ~ [0.7, 1.2] instead of U V^T: the quintic trades
    exactness for speed, which does not hurt training; Keller Jordan 2024). Leading dims are a batch of
    matrices. For 2-D input the ops are exactly torch.optim.Muon's (bitwise equal in bf16).
    Returns a tensor of `dtype`."""
    if g.ndim < 2:
        raise ValueError(f"Newton–Schulz needs a matrix (or a batch of them), got shape {tuple(g.shape)}")
    a, b, c = NS_COEFFICIENTS
    tall = g.size(-2) > g.size(-1)
    x = g.to(dtype)
    if tall:  # iterate on the wide orientation: the Gram matrix x x^T is then the smaller one
        x = x.mT
    if x.ndim == 2:
        x = x / x.norm().clamp(min=eps)  # Frobenius norm >= spectral norm, so singular values end up <= 1
        for _ in range(steps):
            gram = x @ x.T
            x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    else:
        batch_shape = x.shape[:-2]
        x = x.reshape(-1, *x.shape[-2:])
        x = x / x.norm(dim=(-2, -1), keepdim=True).clamp(min=eps)
        for _ in range(steps):
            gram = torch.bmm(x, x.mT)
            x = torch.baddbmm(x, torch.baddbmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
        x = x.reshape(*batch_shape, *x.shape[-2:])
    return x.mT if tall else x


def _holds_whole_matrices(t: DTensor) -> bool:
    """True when only leading (batch) dims are sharded, so every local shard is a stack of whole matrices."""
    return all(pl.is_replicate() or (isinstance(pl, Shard) and pl.dim % t.ndim < t.ndim - 2)
               for pl in t.placements)


def _shape_factor(shape: torch.Size) -> float:
    """Keller Jordan's Muon lr factor sqrt(max(1, rows/cols)) (torch's adjust_lr_fn="original")."""
    rows, cols = shape[-2], shape[-1]
    return max(1.0, rows / cols) ** 0.5


class MuonAdamW(torch.optim.Optimizer):
    """One optimizer with two kinds of param groups. Every group needs `kind` ("muon" | "adamw"), `lr`,
    `weight_decay`; muon groups `momentum`, `nesterov`, `ns_steps`; adamw groups `betas`, `eps`. Extra keys
    (`name`, `base_lr`) are carried along (and saved in state_dict). `ns_dtype`: Newton–Schulz precision;
    None = bfloat16 for CUDA params, float32 otherwise."""

    def __init__(self, param_groups: list[dict[str, Any]], ns_dtype: torch.dtype | None = None) -> None:
        for g in param_groups:
            kind = g.get("kind")
            if kind not in ("muon", "adamw"):
                raise ValueError(f"param group {g.get('name', '?')!r}: kind must be 'muon' or 'adamw', "
                                 f"got {kind!r}")
            need = ("momentum", "nesterov", "ns_steps") if kind == "muon" else ("betas", "eps")
            missing = [k for k in ("lr", "weight_decay", *need) if k not in g]
            if missing:
                raise ValueError(f"param group {g.get('name', '?')!r} ({kind}) lacks {missing}")
            if kind == "muon":
                bad = [tuple(p.shape) for p in g["params"] if p.ndim < 2]
                if bad:
                    raise ValueError(f"param group {g.get('name', '?')!r}: Muon needs >= 2-D params, "
                                     f"got {bad}")
        super().__init__(param_groups, defaults={})
        self.ns_dtype = ns_dtype

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if group["kind"] == "muon":
                self._muon(group, params)
            else:
                self._adamw(group, params)
        return loss

    def _muon(self, group: dict[str, Any], params: list[Tensor]) -> None:
        lr, wd, mom = group["lr"], group["weight_decay"], group["momentum"]
        for p in params:
            g = p.grad
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(g)  # a DTensor (sharded like p) under FSDP2
            buf = state["momentum_buffer"]
            buf.lerp_(g, 1 - mom)
            update = g.lerp(buf, mom) if group["nesterov"] else buf
            dtype = self.ns_dtype or (torch.bfloat16 if p.device.type == "cuda" else torch.float32)
            if isinstance(update, DTensor) and _holds_whole_matrices(update):
                # Fused experts [E, r, c] sharded on E: every rank already has whole matrices, no gather.
                ortho = zeropower_via_newtonschulz(update.to_local(), group["ns_steps"], dtype).to(p.dtype)
                ortho = DTensor.from_local(ortho, p.device_mesh, p.placements, run_check=False, shape=p.shape,
                                           stride=p.stride())
            elif isinstance(update, DTensor):
                # NS needs the whole matrix: all-gather, orthogonalise (redundantly on every rank), then keep
                # this rank's slice; src_data_rank=None splits locally instead of scattering from rank 0.
                ortho = zeropower_via_newtonschulz(update.full_tensor(), group["ns_steps"], dtype)
                ortho = distribute_tensor(ortho.to(p.dtype), p.device_mesh, p.placements, src_data_rank=None)
            else:
                ortho = zeropower_via_newtonschulz(update, group["ns_steps"], dtype).to(p.dtype)
            p.mul_(1 - lr * wd)
            p.add_(ortho, alpha=-lr * _shape_factor(p.shape))  # DTensor .shape is the global shape

    def _adamw(self, group: dict[str, Any], params: list[Tensor]) -> None:
        # Same op sequence as torch.optim.AdamW's single-tensor path (decoupled decay, bias correction).
        lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
        beta1, beta2 = group["betas"]
        for p in params:
            g = p.grad
            state = self.state[p]
            if not state:
                state["step"] = torch.tensor(0.0, dtype=torch.float32)  # a tensor, as in torch's AdamW
                state["exp_avg"] = torch.zeros_like(p)
                state["exp_avg_sq"] = torch.zeros_like(p)
            state["step"] += 1
            step = state["step"].item()
            exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
            p.mul_(1 - lr * wd)
            exp_avg.lerp_(g, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1 - beta2)
            step_size = lr / (1 - beta1 ** step)
            denom = (exp_avg_sq.sqrt() / (1 - beta2 ** step) ** 0.5).add_(eps)
            p.addcdiv_(exp_avg, denom, value=-step_size)


def _module_of(model: nn.Module, param_name: str) -> tuple[str, nn.Module]:
    mod_name = param_name.rpartition(".")[0]
    return mod_name, (model.get_submodule(mod_name) if mod_name else model)


def _is_router(model: nn.Module, param_name: str) -> bool:
    mod_name, module = _module_of(model, param_name)
    return mod_name.rpartition(".")[2] in _ROUTER_MODULE_NAMES or "Router" in type(module).__name__


def _is_norm(model: nn.Module, param_name: str) -> bool:
    """A param of a normalisation module: its class name ends with RMSNorm / LayerNorm (Qwen3RMSNorm,
    nn.LayerNorm, ...) or its own name or its module's name contains "norm" (input_layernorm, q_norm,
    kv_a_layernorm, model.norm)."""
    mod_name, module = _module_of(model, param_name)
    cls = type(module).__name__
    leaf_mod, leaf_param = mod_name.rpartition(".")[2].lower(), param_name.rpartition(".")[2].lower()
    return cls.endswith(("RMSNorm", "LayerNorm")) or "norm" in leaf_mod or "norm" in leaf_param


def classify_params(model: nn.Module) -> dict[str, list[tuple[str, nn.Parameter]]]:
    """Split the trainable params into GROUPS (every one lands in exactly one; tied weights appear once):

    - "embedding": `model.get_input_embeddings().weight` (without that method: every nn.Embedding's weight).
    - "unembedding": `model.get_output_embeddings().weight`, unless it is the embedding (tied) or absent.
    - "norm" (AdamW at lr_norm): params of normalisation modules (class name ending in RMSNorm / LayerNorm,
      or "norm" in the module's or the param's own name: input/post_attention_layernorm, q_norm, k_norm,
      MLA's kv_a_layernorm, the final model.norm) and MoE router params, i.e. of a module named `gate` /
      `router` or whose class name contains "Router" (`mlp.gate.weight` [num_experts, hidden], gpt-oss's
      `mlp.router.weight` and `.bias`; `gate_proj`/`gate_up_proj` are not routers).
    - "scalar" (AdamW at lr_scalar): every other param with < 2 dims (biases, attention sinks); 2-D+ params
      whose name ends in "bias" (gpt-oss expert biases [E, n]); degenerate matrices with a last dim or
      second-to-last dim of 1.
    - "matrix" (Muon): every other >= 2-D param: attention q/k/v/o (incl. MLA's low-rank projections), MLP
      and shared-expert weights, fused expert tensors [E, rows, cols] (a batch of E matrices).
    Buffers (e.g. DeepSeek's `e_score_correction_bias`) are not params and are not touched.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]  # deduplicates tied params
    try:
        emb_ids = {id(model.get_input_embeddings().weight)}  # type: ignore[operator, union-attr]
    except (AttributeError, NotImplementedError):
        emb_ids = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    out_mod = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    unemb_ids = {id(out_mod.weight)} - emb_ids if out_mod is not None else set()
    groups: dict[str, list[tuple[str, nn.Parameter]]] = {k: [] for k in GROUPS}
    for name, p in named:
        if id(p) in emb_ids:
            groups["embedding"].append((name, p))
        elif id(p) in unemb_ids:
            groups["unembedding"].append((name, p))
        elif _is_norm(model, name) or _is_router(model, name):
            groups["norm"].append((name, p))
        elif p.ndim >= 2 and min(p.shape[-2:]) > 1 and not name.endswith("bias"):
            groups["matrix"].append((name, p))
        else:
            groups["scalar"].append((name, p))
    placed = [id(p) for g in groups.values() for _, p in g]
    assert len(placed) == len(set(placed)) == len(named), "every trainable param must be in exactly one group"
    return groups


def width_lr_scale(hidden_size: int) -> float:
    """nanochat's AdamW lr factor for a model of width `hidden_size`: (hidden_size / 768) ** -0.5."""
    if hidden_size < 1:
        raise ValueError(f"hidden_size must be >= 1, got {hidden_size}")
    return (hidden_size / WIDTH_REFERENCE) ** -0.5


def build_optimizer(model: nn.Module, cfg: OptimConfig, ns_dtype: torch.dtype | None = None,
                    hidden_size: int | None = None) -> MuonAdamW:
    """One MuonAdamW over `classify_params(model)`. Build it after `fully_shard` (it must hold the DTensors).

    Groups (empty ones are left out) carry `name` (a GROUPS entry) and `base_lr`, the group's effective peak
    lr (the trainer sets `lr = base_lr * schedule multiplier`); `lr` starts at `base_lr`. With
    `cfg.adamw_width_scaling`, base_lr of the WIDTH_SCALED_GROUPS is the configured lr times
    `width_lr_scale(hidden_size)`; `hidden_size` defaults to `model.config.hidden_size` (HF models, also
    under PEFT / FSDP2), and is needed only then.
    Weight decay applies to the "matrix" group only: with the decoupled form p *= 1 - lr*wd, the large
    embedding/scalar lrs would shrink those by up to 4% a step, and norms/biases are not decayed by convention.
    """
    groups = classify_params(model)
    scale = 1.0
    if cfg.adamw_width_scaling:
        if hidden_size is None:
            hidden_size = getattr(getattr(model, "config", None), "hidden_size", None)
        if hidden_size is None:
            raise ValueError("optim.adamw_width_scaling needs the model width: the model has no "
                             "config.hidden_size, pass hidden_size= to build_optimizer")
        scale = width_lr_scale(int(hidden_size))
    adamw = {"kind": "adamw", "betas": tuple(cfg.betas), "eps": cfg.eps}
    matrix = ({"kind": "muon", "momentum": cfg.momentum, "nesterov": cfg.nesterov, "ns_steps": cfg.ns_steps,
               "base_lr": cfg.lr_matrix} if cfg.name == "muon" else {**adamw, "base_lr": cfg.lr_adamw})
    spec: dict[str, dict[str, Any]] = {
        "matrix": {**matrix, "weight_decay": cfg.weight_decay},
        "embedding": {**adamw, "base_lr": cfg.lr_embedding, "weight_decay": 0.0},
        "unembedding": {**adamw, "base_lr": cfg.lr_unembedding, "weight_decay": 0.0},
        "norm": {**adamw, "base_lr": cfg.lr_norm, "weight_decay": 0.0},
        "scalar": {**adamw, "base_lr": cfg.lr_scalar, "weight_decay": 0.0},
    }
    assert tuple(spec) == GROUPS
    for name in WIDTH_SCALED_GROUPS:
        spec[name]["base_lr"] *= scale
    param_groups = [{"params": [p for _, p in groups[name]], "name": name, "lr": s["base_lr"], **s}
                    for name, s in spec.items() if groups[name]]
    return MuonAdamW(param_groups, ns_dtype=ns_dtype)


def clip_grad_norm(params: Iterable[Tensor], max_norm: float) -> float:
    """Clip the global grad norm to `max_norm` (0 = only measure it) and return the pre-clip norm as a float.

    torch.nn.utils handles DTensor grads (FSDP2): the norm is reduced across ranks and comes back as a
    replicated DTensor, which `full_tensor()` turns into a plain one. All params must share one device mesh.
    """
    if max_norm < 0:
        raise ValueError(f"max_norm must be >= 0, got {max_norm}")
    params = [p for p in params if p.grad is not None]
    if not params:
        return 0.0
    if max_norm > 0:
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    else:
        norm = torch.nn.utils.get_total_norm([p.grad for p in params])
    if isinstance(norm, DTensor):
        norm = norm.full_tensor()
    return float(norm)
