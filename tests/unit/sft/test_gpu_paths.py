"""What SFT does differently on a GPU, checked on CPU: the packing-isolation probe judges a leak against the
rounding measured in the same run (bf16, large logits, shape-dependent kernels) and still refuses real leaks;
full fine-tuning keeps fp32 master weights under bf16 autocast (where bf16 weights would not move at lr 5e-7),
LoRA/QLoRA adapters are fp32; `compare` runs in bf16 on the GPU with its inputs on the model's device."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sft.compare import generate, inference_placement, load_model
from sft.model import (FLOOR_ULPS, NOISE_FACTOR, build_scratch_base, check_packing_isolation, load_dtype,
                       packing_probe, packing_tolerance, training_device, upcast_trainable)
from sft.train import build_trainer
from tests.unit.sft.test_train import TEXTS, rows, tiny_cfg

BF16_EPS = torch.finfo(torch.bfloat16).eps  # 2**-7: one bf16 ulp at 1.0, so 0.125 at |x| in [16, 32)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("sft-gpu-paths")
    return root, build_scratch_base(tiny_cfg(root), TEXTS)


def _model(path: Path, dtype=torch.float32, logit_gain: float = 1.0):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(logit_gain)
    return model


def _shape_dependent_rounding(model) -> None:
    """Perturbs every attention output by one bf16 ulp (2**-8 relative) when the row's length is 2 mod 3, as a
    GPU attention kernel chosen (or tiled) by sequence length rounds differently: a position's value then
    depends on the tensor's shape but never on another sample's tokens."""
    def hook(module, args, out):
        length = out[0].shape[1]
        return ((out[0].float() * (1 + (length % 3 - 1) * 2**-8)).to(out[0].dtype), *out[1:])

    for layer in model.model.layers:
        layer.self_attn.register_forward_hook(hook)


class _PositionsNotRestarted(torch.nn.Module):
    """A packed row fed with positions 0..T-1 instead of restarting per sample (as a collator or model that
    drops position ids would): the causal mask then spans both samples."""

    def __init__(self, model) -> None:
        super().__init__()
        self.inner, self.config = model, model.config

    def get_input_embeddings(self):
        return self.inner.get_input_embeddings()

    def forward(self, input_ids, position_ids, **kwargs):
        return self.inner(input_ids=input_ids, position_ids=torch.arange(input_ids.shape[1])[None], **kwargs)


@torch.no_grad()
def _old_metric(model, length: int = 16) -> float:
    """The former probe's number: max |logp(b alone) - logp(b packed after a)|, refused above 0.05."""
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randint(0, 320, (1, length), generator=g) for _ in range(2))
    pos = torch.arange(length)[None]
    alone = model(input_ids=b, position_ids=pos).logits.float().log_softmax(-1)
    packed = model(input_ids=torch.cat([a, b], 1), position_ids=torch.cat([pos, pos], 1)).logits[:, length:]
    return (alone - packed.float().log_softmax(-1)).abs().max().item()


# --- 1. packing isolation probe ------------------------------------------------------------------------


def test_tolerance_follows_the_measured_noise_and_never_drops_below_a_few_ulps_of_the_logits():
    assert packing_tolerance(noise=0.2, scale=1.0, eps=BF16_EPS) == pytest.approx(NOISE_FACTOR * 0.2)
    # no measurable noise (same kernels for both shapes): FLOOR_ULPS bf16 ulps of the largest logit remain
    assert packing_tolerance(noise=0.0, scale=30.0, eps=BF16_EPS) == pytest.approx(FLOOR_ULPS * BF16_EPS * 30)
    assert packing_tolerance(noise=0.0, scale=30.0, eps=BF16_EPS) > 0.05  # the old fixed bound was below 1 ulp
    fp32 = packing_tolerance(noise=0.0, scale=30.0, eps=torch.finfo(torch.float32).eps)
    assert fp32 < 1e-4  # fp32 keeps the probe sharp


def test_bf16_probe_accepts_an_isolated_model_with_large_logits_that_the_old_rule_refused(base):
    model = _model(base[1], torch.bfloat16, logit_gain=60.0)
    _shape_dependent_rounding(model)
    probe = check_packing_isolation(model, 320, torch.bfloat16)  # does not raise
    assert 20 <= probe.scale <= 32 and probe.eps == BF16_EPS  # |logit| ~ 20-30, where a bf16 ulp is 0.125
    assert probe.leak == 0.0  # same shapes, different packed-before samples: bit-identical
    assert probe.noise > 0.05  # what the shape alone does to the log-probs in bf16
    assert _old_metric(model) > 0.05  # the former fixed rule would have refused packing here


def test_probe_runs_in_the_training_compute_dtype(base):
    """fp32 weights under bf16 autocast (full fine-tuning with bf16=True) are probed at bf16 precision."""
    model = _model(base[1], torch.float32, logit_gain=60.0)
    _shape_dependent_rounding(model)
    compute = []
    model.model.layers[0].mlp.down_proj.register_forward_hook(lambda m, i, o: compute.append(o.dtype))
    assert packing_probe(model, 320, torch.float32).eps == torch.finfo(torch.float32).eps
    assert set(compute) == {torch.float32}
    compute.clear()
    probe = check_packing_isolation(model, 320, torch.bfloat16)
    assert set(compute) == {torch.bfloat16} and probe.eps == BF16_EPS and probe.leak == 0.0
    assert not model.training  # the probe leaves the mode as it found it


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_positions_that_do_not_restart_are_refused_in_fp32_and_bf16(base, dtype):
    model = _model(base[1], dtype, logit_gain=60.0)
    _shape_dependent_rounding(model)  # the noise the isolated model passed with above
    leaky = _PositionsNotRestarted(model)
    with pytest.raises(ValueError, match=r"attn_implementation='sdpa' this qwen3 model lets packed samples "
                                         r"attend to each other .*flash_attention_2"):
        check_packing_isolation(leaky, 320, dtype)
    probe = packing_probe(leaky, 320, dtype)
    assert probe.leak > 10 * probe.tolerance  # a real leak is not near the boundary


@pytest.mark.parametrize("weights", [torch.float32, torch.bfloat16])
def test_eager_gpt_oss_is_refused_in_bf16(weights):
    from transformers import AutoModelForCausalLM, GptOssConfig

    torch.manual_seed(0)
    gpt_oss = AutoModelForCausalLM.from_config(GptOssConfig(
        vocab_size=320, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
        head_dim=16, intermediate_size=32, num_local_experts=2, num_experts_per_tok=1, sliding_window=8,
        initializer_range=0.5), attn_implementation="eager").to(weights).eval()
    with pytest.raises(ValueError, match="attn_implementation='eager'.*gpt_oss model lets packed samples"):
        check_packing_isolation(gpt_oss, 320, torch.bfloat16)


def test_training_device_is_the_local_gpu_or_cpu():
    assert training_device(False, 3) == torch.device("cpu")
    assert training_device(True, 0) == torch.device("cuda", 0)
    assert training_device(True, 3) == torch.device("cuda", 3)  # torchrun's LOCAL_RANK


# --- 2. compare on the GPU -----------------------------------------------------------------------------


def test_compare_runs_bf16_on_the_gpu_and_fp32_on_cpu():
    assert inference_placement(True) == (torch.device("cuda"), torch.bfloat16)
    assert inference_placement(False) == (torch.device("cpu"), torch.float32)


def test_load_model_places_checkpoints_and_adapters(base, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer

    model, _ = load_model(str(base[1]))  # this machine: CPU, fp32
    assert {(p.device.type, p.dtype) for p in model.parameters()} == {("cpu", torch.float32)}
    model, _ = load_model(str(base[1]), (torch.device("cpu"), torch.bfloat16))
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    model, _ = load_model(str(base[1]), (torch.device("meta"), torch.float32))  # a device other than CPU's
    assert {p.device.type for p in model.parameters()} == {"meta"}
    adapter = get_peft_model(_model(base[1]), LoraConfig(r=2, target_modules=["q_proj"]))
    adapter.save_pretrained(tmp_path / "adapter")  # adapter_config.json names the base checkpoint
    AutoTokenizer.from_pretrained(base[1]).save_pretrained(tmp_path / "adapter")
    model, _ = load_model(str(tmp_path / "adapter"), (torch.device("cpu"), torch.bfloat16))
    frozen = {p.dtype for n, p in model.named_parameters() if "lora_" not in n}
    assert frozen == {torch.bfloat16} and not model.training


def test_generate_feeds_the_inputs_on_the_models_device(base):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base[1])
    tokenizer.pad_token, tokenizer.padding_side = tokenizer.eos_token, "left"
    seen = []

    class OnMeta(torch.nn.Module):  # a stand-in for a model on another device than the tokenizer's CPU
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.empty(1, device="meta"))

        def generate(self, input_ids, attention_mask, max_new_tokens, **kwargs):
            seen.append((input_ids.device, attention_mask.device))
            return torch.cat([torch.zeros_like(input_ids, device="cpu"),
                              torch.full((input_ids.shape[0], 1), 65)], 1)

    answers = generate(OnMeta(), tokenizer, ["Add.", "What does Point hold?"], 4, plain=True)
    assert seen == [(torch.device("meta"), torch.device("meta"))] and len(answers) == 2


# --- 3. fp32 master weights ----------------------------------------------------------------------------


def test_full_fine_tuning_loads_fp32_and_only_frozen_bases_may_be_bf16():
    assert load_dtype("full", bf16=True) == torch.float32  # bf16 compute comes from the Trainer's autocast
    assert load_dtype("full", bf16=False) == torch.float32
    assert load_dtype("lora", bf16=True) == torch.bfloat16
    assert load_dtype("qlora", bf16=True) == torch.bfloat16
    assert load_dtype("lora", bf16=False) == torch.float32


def test_one_adamw_step_at_lr_5e7_moves_fp32_masters_and_leaves_bf16_weights_unchanged(base):
    torch.manual_seed(0)
    ids = torch.randint(0, 320, (2, 24))
    masters, bf16 = _model(base[1], torch.float32).train(), _model(base[1], torch.bfloat16).train()
    before = {n: p.detach().clone() for n, p in masters.named_parameters()}
    before_bf16 = {n: p.detach().clone() for n, p in bf16.named_parameters()}
    for model in (masters, bf16):
        optimizer = torch.optim.AdamW(model.parameters(), lr=5e-7, weight_decay=0.0)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # bf16 compute for both, as Trainer(bf16=True)
            out = model(input_ids=ids, labels=ids)
        assert out.logits.dtype == torch.bfloat16
        out.loss.backward()
        optimizer.step()

    def moved(model, reference) -> float:
        """The share of the weights that got a gradient (embedding rows of unseen tokens do not) that moved."""
        params = list(model.named_parameters())
        changed = sum(int(((p.detach() != reference[n]) & (p.grad != 0)).sum()) for n, p in params)
        return changed / sum(int((p.grad != 0).sum()) for _, p in params)

    assert moved(masters, before) > 0.99  # Adam's first step is ~lr per weight: fp32 holds it
    assert moved(bf16, before_bf16) < 0.01  # below half a bf16 ulp for all but weights within ~1e-4 of 0


def test_full_bf16_training_keeps_fp32_masters_under_autocast_and_they_move(base):
    root, path = base
    cfg = tiny_cfg(root / "full", bf16=True, lr=5e-7, max_steps=1, warmup_ratio=0.0, schedule="constant")
    trainer, _ = build_trainer(cfg, str(path), rows(("Add.", "a+b"), ("What does Point hold?", "x y")), [])
    model = trainer.model
    assert trainer.args.bf16 and {p.dtype for p in model.parameters()} == {torch.float32}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    compute = []
    # (TRL's loss fuses lm_head into its cross-entropy, so a decoder matmul shows the compute dtype)
    model.model.layers[0].mlp.down_proj.register_forward_hook(lambda m, i, o: compute.append(o.dtype))
    trainer.train()
    assert compute and set(compute) == {torch.bfloat16}  # the forward ran in bf16 (autocast) on fp32 weights
    changed = [n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert len(changed) > 0.9 * len(before)


def test_lora_on_a_bf16_base_trains_fp32_adapters(base):
    root, path = base
    cfg = tiny_cfg(root / "lora", bf16=True, method="lora")
    trainer, _ = build_trainer(cfg, str(path), rows(("Add.", "a+b")), [])
    trainable = {p.dtype for p in trainer.model.parameters() if p.requires_grad}
    frozen = {p.dtype for p in trainer.model.parameters() if not p.requires_grad}
    assert trainable == {torch.float32} and frozen == {torch.bfloat16}  # PEFT's autocast_adapter_dtype


def test_upcast_trainable_gives_bf16_adapters_fp32_masters_and_leaves_the_base(base):
    """What build_trainer undoes for QLoRA, where TRL casts the adapters to bf16 (4-bit needs CUDA)."""
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(_model(base[1], torch.bfloat16), LoraConfig(r=2, target_modules=["q_proj"]),
                           autocast_adapter_dtype=False)
    assert {p.dtype for p in model.parameters() if p.requires_grad} == {torch.bfloat16}
    assert upcast_trainable(model) == 2 * 2  # lora_A and lora_B of two layers
    assert {p.dtype for p in model.parameters() if p.requires_grad} == {torch.float32}
    assert {p.dtype for p in model.parameters() if not p.requires_grad} == {torch.bfloat16}
