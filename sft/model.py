"""The model side of SFT: the base (an HF checkpoint, or a scratch one built from config), its chat template,
and the fine-tuning method (full, LoRA with per-architecture target presets, QLoRA on GPU)."""

from __future__ import annotations

import logging
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


def load_for_training(cfg: SFTConfig, base: str):
    """(model, tokenizer, peft_config or None) for `train.method`."""
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer

    method = cfg.train.method
    tokenizer = AutoTokenizer.from_pretrained(base)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    ensure_chat_template(tokenizer, cfg.model.chat_template)
    kwargs = {"dtype": torch.bfloat16 if _use_bf16(cfg) else torch.float32}
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
        check_packing_isolation(model, len(tokenizer))
    if method == "full":
        return model, tokenizer, None
    lora = cfg.lora
    peft_config = LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout, bias="none",
                             task_type="CAUSAL_LM", target_modules=lora_target_modules(model, lora.targets))
    return model, tokenizer, peft_config


@torch.no_grad()
def packing_leak(model, vocab_size: int, length: int = 12) -> float:
    """How far (max |log-prob| difference) a sample's outputs move when another sample is packed before it
    with restarting position ids. ~0 when the model keeps packed samples apart; O(1) when they attend to each
    other (attention implementations that build their masks without position ids)."""
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randint(0, vocab_size, (1, length), generator=g) for _ in range(2))
    device = next(model.parameters()).device
    pos = torch.arange(length)[None]
    alone = model(input_ids=b.to(device), position_ids=pos.to(device), use_cache=False).logits.float()
    packed = model(input_ids=torch.cat([a, b], 1).to(device), position_ids=torch.cat([pos, pos], 1).to(device),
                   use_cache=False).logits[:, length:].float()
    return (alone.log_softmax(-1) - packed.log_softmax(-1)).abs().max().item()


def check_packing_isolation(model, vocab_size: int, tolerance: float = 0.05) -> None:
    """Refuse packing when this model/attention implementation lets packed samples see each other."""
    leak = packing_leak(model, vocab_size)
    if leak > tolerance:
        raise ValueError(
            f"train.packing: with attn_implementation={model.config._attn_implementation!r} this "
            f"{model.config.model_type} model lets packed samples attend to each other (log-probs move by "
            f"{leak:.3f}); set train.packing=false or model.attn_implementation=flash_attention_2")


def _use_bf16(cfg: SFTConfig) -> bool:
    return cfg.train.bf16 if cfg.train.bf16 is not None else torch.cuda.is_available()
