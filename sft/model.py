"""The model side of SFT: the base (an HF checkpoint, or a scratch one built from config), its chat template,
and the fine-tuning method (full, LoRA with per-architecture target presets, QLoRA on GPU)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from sft.config import SFTConfig

log = logging.getLogger(__name__)

# For base models without a chat template: plain-text turns (no new tokens, so no embedding resize), the
# assistant turn closed by EOS so generation stops there. `{% generation %}` marks assistant tokens for
# TRL's assistant_only_loss; prompt-completion data masks the prompt either way.
BUILTIN_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}{{ '### System:\n' + message['content'] + '\n\n' }}"
    "{%- elif message['role'] == 'user' -%}{{ '### Instruction:\n' + message['content'] + '\n\n' }}"
    "{%- elif message['role'] == 'assistant' -%}{{ '### Response:\n' }}"
    "{%- generation -%}{{ message['content'] + eos_token }}{%- endgeneration -%}"
    "{%- if not loop.last -%}{{ '\n\n' }}{%- endif -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '### Response:\n' }}{%- endif -%}"
)

# Linear layers are sorted into presets by the module path they live under, which is how every HF
# architecture names them (self_attn / attention / attn; mlp / feed_forward / experts). Routers stay frozen.
_ATTENTION_PARTS = ("attn", "attention")
_MLP_PARTS = ("mlp", "feed_forward", "ffn", "experts", "moe")
_NEVER = ("lm_head", "router", "gate")


def ensure_chat_template(tokenizer, mode: str) -> str:
    """Sets the built-in template when asked to or when the tokenizer has none; returns which one is used.
    "none" leaves the tokenizer as it is: prompts are plain text."""
    if mode == "none":
        return "none"
    if mode == "builtin" or not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = BUILTIN_CHAT_TEMPLATE
        return "builtin"
    return "tokenizer"


def linear_module_names(model) -> list[str]:
    from transformers.pytorch_utils import Conv1D

    return [name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear | Conv1D)]


def lora_target_modules(model, targets) -> list[str]:
    """Full names of the linear layers a preset (attention | mlp | all-linear) or a suffix list selects.
    Errors name the model's real linear layers, so a wrong preset is fixed in one try."""
    names = linear_module_names(model)

    def leaf(name: str) -> str:
        return name.rsplit(".", 1)[-1]

    def under(name: str, parts: tuple[str, ...]) -> bool:
        return any(p in segment for segment in name.split(".")[:-1] for p in parts)

    candidates = [n for n in names if leaf(n) not in _NEVER and not n.startswith("lm_head")]
    if targets == "attention":
        chosen = [n for n in candidates if under(n, _ATTENTION_PARTS)]
    elif targets == "mlp":
        chosen = [n for n in candidates if under(n, _MLP_PARTS) and not under(n, _ATTENTION_PARTS)]
    elif targets == "all-linear":
        chosen = candidates
    else:
        chosen = [n for n in names if any(n == t or n.endswith("." + t) for t in targets)]
    if not chosen:
        kinds = sorted({leaf(n) for n in names})
        raise ValueError(f"lora.targets={targets!r} selects no linear layer of this "
                         f"{model.config.model_type} model; its linear layers are named {kinds}")
    return chosen


def build_scratch_base(cfg: SFTConfig, texts: list[str]) -> Path:
    """Tokenizer trained on `texts` + a random-init model of `model.scratch.arch`, saved to cfg.base_dir."""
    from pretrain.model import build_model
    from pretrain.tokenizer import train_tokenizer

    out = cfg.base_dir
    if (out / "config.json").exists():
        return out
    scratch = cfg.model.scratch
    tokenizer = train_tokenizer(texts, scratch.vocab_size)
    ensure_chat_template(tokenizer, cfg.model.chat_template)
    torch.manual_seed(scratch.seed)
    model = build_model(scratch.arch, len(tokenizer), tokenizer.eos_token_id)
    tmp = out.with_name(out.name + ".partial")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(out)
    return out


def qlora_quantization():
    """4-bit NF4 with double quantisation (the QLoRA recipe). GPU only: bitsandbytes' 4-bit kernels are CUDA."""
    if not torch.cuda.is_available():
        raise ValueError("train.method=qlora: 4-bit NF4 quantisation (bitsandbytes) needs a CUDA GPU and this "
                         "machine has none; use train.method=lora (or full) on CPU")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ValueError("train.method=qlora needs bitsandbytes: pip install bitsandbytes") from None
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16)


def load_dtype(method: str, bf16: bool) -> torch.dtype:
    """The dtype the weights are loaded in. Full fine-tuning keeps fp32 weights (the optimizer's masters) and
    gets bf16 compute from the Trainer's autocast (bf16=True): an AdamW step of lr 5e-7 is far below half a
    bf16 ulp of a typical weight, so bf16 weights updated in place would not move at all. LoRA/QLoRA freeze the
    base, which may stay bf16 (half the memory); their trainable adapters are kept fp32 (see
    `upcast_trainable`)."""
    if method == "full" or not bf16:
        return torch.float32
    return torch.bfloat16


def upcast_trainable(model) -> int:
    """Casts trainable half-precision parameters to fp32 so that the optimizer updates fp32 masters; returns
    how many were cast. PEFT (autocast_adapter_dtype=True) already makes LoRA adapters fp32 on a bf16 base,
    but TRL casts QLoRA adapters back to bf16 after get_peft_model, where small updates round away."""
    cast = 0
    for param in model.parameters():
        if param.requires_grad and param.dtype in (torch.bfloat16, torch.float16):
            param.data = param.data.float()
            cast += 1
    return cast


def training_device(cuda_available: bool, local_rank: int) -> torch.device:
    """Where the Trainer runs this process's model: its local GPU (cuda:LOCAL_RANK under torchrun) or CPU."""
    return torch.device("cuda", local_rank) if cuda_available else torch.device("cpu")


def _is_quantized(model) -> bool:
    return bool(getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False))


def load_for_training(cfg: SFTConfig, base: str):
    """(model, tokenizer, peft_config or None) for `train.method`."""
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer

    method = cfg.train.method
    bf16 = _use_bf16(cfg)
    tokenizer = AutoTokenizer.from_pretrained(base)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    ensure_chat_template(tokenizer, cfg.model.chat_template)
    kwargs = {"dtype": load_dtype(method, bf16)}
    if cfg.model.attn_implementation:
        kwargs["attn_implementation"] = cfg.model.attn_implementation
    if method == "qlora":
        kwargs["quantization_config"] = qlora_quantization()
    model = AutoModelForCausalLM.from_pretrained(base, **kwargs)
    model.config.use_cache = False  # packed rows are only isolated without the KV cache
    if method == "qlora":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, cfg.model.gradient_checkpointing)
    if cfg.train.packing and cfg.parallel != "deepspeed_zero3":  # ZeRO-3 weights are partitioned: no forward yet
        # probed where and how it will train: the Trainer (and ZeRO-2) put the whole model on this process's GPU
        # anyway; FSDP shards it there, so it is probed where it is (quantized models already are on the GPU)
        if cfg.parallel in ("none", "deepspeed_zero2") and not _is_quantized(model):
            model.to(training_device(torch.cuda.is_available(), int(os.environ.get("LOCAL_RANK", "0"))))
        check_packing_isolation(model, len(tokenizer), torch.bfloat16 if bf16 else torch.float32)
    if method == "full":
        return model, tokenizer, None
    lora = cfg.lora
    peft_config = LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout, bias="none",
                             task_type="CAUSAL_LM", target_modules=lora_target_modules(model, lora.targets))
    return model, tokenizer, peft_config


# A packed sample's log-probs may differ, when isolation holds, only by rounding. `leak` compares two forwards
# of identical shapes (so usually bit-identical); `noise` measures what a change of shape alone does in this
# very run (kernels, tiling, dtype); packing is refused when the leak clearly exceeds both that and a few ulps
# of the largest logit (for kernels that are not bit-reproducible run to run).
NOISE_FACTOR = 4.0
FLOOR_ULPS = 4.0


@dataclass(frozen=True)
class PackingProbe:
    leak: float  # max |logp(b | a, b packed) - logp(b | a', b packed)|, a != a' of one length
    noise: float  # max |logp(b alone) - logp(b followed by more tokens)|: equal by causality, up to rounding
    scale: float  # max |logit| seen
    eps: float  # machine epsilon of the forward's lowest precision (compute dtype or weights)

    @property
    def tolerance(self) -> float:
        return packing_tolerance(self.noise, self.scale, self.eps)


def packing_tolerance(noise: float, scale: float, eps: float, factor: float = NOISE_FACTOR,
                      floor_ulps: float = FLOOR_ULPS) -> float:
    """The largest leak still taken for rounding: `factor` x the noise measured beside it, and at least
    `floor_ulps` ulps of the largest logit. A fixed absolute bound cannot work across dtypes and models: in
    bf16 one ulp at |logit| 16-32 is 0.125, whereas a real leak (another sample's tokens in the context)
    moves log-probs by O(1) on a real model."""
    return max(factor * noise, floor_ulps * eps * scale)


@torch.no_grad()
def packing_probe(model, vocab_size: int, compute_dtype: torch.dtype = torch.float32,
                  length: int = 16) -> PackingProbe:
    """Runs the model where it is, in `compute_dtype` (bf16 autocast, as the Trainer trains with bf16=True), on
    random samples a, a', b and a tail t: `leak` from [a b] vs [a' b] packed with restarting position ids,
    `noise` from [b] vs [b t] with ordinary positions (see PackingProbe)."""
    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(0)
    vocab = min(vocab_size, model.get_input_embeddings().num_embeddings)
    a, a2, b, tail = (torch.randint(0, vocab, (1, length), generator=g) for _ in range(4))
    pos = torch.arange(length)[None]
    scale = 0.0

    def logp(ids, positions):
        nonlocal scale
        logits = model(input_ids=ids.to(device), position_ids=positions.to(device), use_cache=False).logits.float()
        scale = max(scale, logits.abs().max().item())
        return logits.log_softmax(-1)

    half = compute_dtype != torch.float32
    was_training = model.training
    model.eval()
    try:
        with torch.autocast(device.type, dtype=compute_dtype, enabled=half):
            packed = logp(torch.cat([a, b], 1), torch.cat([pos, pos], 1))[:, length:]
            packed2 = logp(torch.cat([a2, b], 1), torch.cat([pos, pos], 1))[:, length:]
            alone = logp(b, pos)
            extended = logp(torch.cat([b, tail], 1), torch.arange(2 * length)[None])[:, :length]
    finally:
        model.train(was_training)
    dtypes = {compute_dtype} | {p.dtype for p in model.parameters() if p.is_floating_point()}
    return PackingProbe(leak=(packed - packed2).abs().max().item(), noise=(alone - extended).abs().max().item(),
                        scale=scale, eps=max(torch.finfo(d).eps for d in dtypes))


def check_packing_isolation(model, vocab_size: int, compute_dtype: torch.dtype = torch.float32) -> PackingProbe:
    """Refuse packing when this model/attention implementation lets packed samples see each other."""
    probe = packing_probe(model, vocab_size, compute_dtype)
    log.info("packing isolation probe: %s (tolerance %.3g)", probe, probe.tolerance)
    if probe.leak > probe.tolerance:
        raise ValueError(
            f"train.packing: with attn_implementation={model.config._attn_implementation!r} this "
            f"{model.config.model_type} model lets packed samples attend to each other (a sample's log-probs "
            f"move by {probe.leak:.3g} with the sample packed before it, against {probe.tolerance:.3g} of "
            f"rounding in {str(compute_dtype).removeprefix('torch.')}); set train.packing=false or "
            f"model.attn_implementation=flash_attention_2")
    return probe


def _use_bf16(cfg: SFTConfig) -> bool:
    return cfg.train.bf16 if cfg.train.bf16 is not None else torch.cuda.is_available()
