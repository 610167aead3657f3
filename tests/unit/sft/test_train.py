"""SFT training pieces on a tiny scratch model: record conversion, the built-in chat template, prompt masking
token by token, packed loss == unpacked loss, all-masked batches, LoRA target presets, QLoRA on CPU, WSD,
and merge == adapter outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sft.config import SFTConfig
from sft.model import BUILTIN_CHAT_TEMPLATE, build_scratch_base, lora_target_modules
from sft.train import AllLabelsMaskedError, build_trainer, read_records, record_to_prompt_completion

TEXTS = ["int add(int a, int b) { return a + b; }", "Write a function that adds two ints.",
         "class Point { public: int x; int y; };", "What does Point hold?"] * 20


def tiny_cfg(out_dir: Path, **train) -> SFTConfig:
    return SFTConfig.model_validate({
        "out_dir": str(out_dir),
        "model": {"scratch": {"vocab_size": 320, "arch": {"hidden_size": 32, "num_layers": 2, "num_heads": 2,
                                                          "num_kv_heads": 1, "head_dim": 16,
                                                          "intermediate_size": 64, "context": 256}}},
        "train": {"method": "full", "max_steps": 4, "max_length": 128, "micro_batch_size": 2, **train},
        "logging": {"tensorboard": False}, "eval": {"every": 100}, "checkpoint": {"every": 100}})


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("sft-base")
    return root, build_scratch_base(tiny_cfg(root), TEXTS)


def rows(*pairs: tuple[str, str]) -> list[dict]:
    return [record_to_prompt_completion({"messages": [{"role": "user", "content": p},
                                                      {"role": "assistant", "content": c}]}, "chat", "test")
            for p, c in pairs]


def test_records_from_chat_and_alpaca():
    chat = {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "U"},
                         {"role": "assistant", "content": "A"}]}
    assert record_to_prompt_completion(chat, "chat", "x") == {
        "prompt": chat["messages"][:2], "completion": chat["messages"][2:]}
    alpaca = {"instruction": "Fix it.", "input": "int f(", "output": "int f();"}
    assert record_to_prompt_completion(alpaca, "alpaca", "x") == {
        "prompt": [{"role": "user", "content": "Fix it.\n\nint f("}],
        "completion": [{"role": "assistant", "content": "int f();"}]}


@pytest.mark.parametrize("line, message", [
    ("{not json", "f.jsonl:2: invalid JSON"),
    ('{"messages": [{"role": "user", "content": "q"}, {"role": "user", "content": "a"}]}',
     "f.jsonl:2: the last message must be the assistant's reply"),
    ('{"messages": [{"role": "robot", "content": "q"}, {"role": "assistant", "content": "a"}]}',
     "f.jsonl:2: messages[0] needs a role"),
])
def test_bad_records_name_the_file_and_line(tmp_path, line, message):
    path = tmp_path / "f.jsonl"
    good = '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}'
    path.write_text(good + "\n" + line + "\n")
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")):
        read_records(path, "chat")


def test_builtin_template_renders_turns_and_ends_the_answer_with_eos(base):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base[1])
    assert tok.chat_template == BUILTIN_CHAT_TEMPLATE  # the scratch base has no template of its own
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Add."},
                {"role": "assistant", "content": "a+b"}]
    assert tok.apply_chat_template(messages, tokenize=False) == (
        "### System:\nBe brief.\n\n### Instruction:\nAdd.\n\n### Response:\na+b<|endoftext|>")
    assert tok.apply_chat_template(messages[:2], tokenize=False, add_generation_prompt=True) == (
        "### System:\nBe brief.\n\n### Instruction:\nAdd.\n\n### Response:\n")


def _batch(trainer, n: int):
    return trainer.data_collator([trainer.train_dataset[i] for i in range(n)])


def test_labels_mask_exactly_prompt_and_padding_tokens(base):
    root, path = base
    data = rows(("Write a function that adds two ints.", "int add(int a, int b) { return a + b; }"),
                ("What does Point hold?", "x"))
    trainer, dropped = build_trainer(tiny_cfg(root, packing=False), str(path), data, [])
    tok = trainer.processing_class
    batch = _batch(trainer, 2)
    assert dropped == 0 and batch["input_ids"].shape[0] == 2
    expected = [("### Instruction:\nWrite a function that adds two ints.\n\n### Response:\n",
                 "int add(int a, int b) { return a + b; }<|endoftext|>"),
                ("### Instruction:\nWhat does Point hold?\n\n### Response:\n", "x<|endoftext|>")]
    for row, (prompt, completion) in enumerate(expected):
        ids, labels, attn = batch["input_ids"][row], batch["labels"][row], batch["attention_mask"][row]
        prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        completion_ids = tok(completion, add_special_tokens=False)["input_ids"]
        n = len(prompt_ids) + len(completion_ids)
        assert ids[:n].tolist() == prompt_ids + completion_ids
        # token by token: -100 on every prompt token, the token itself on every completion token
        assert labels[: len(prompt_ids)].tolist() == [-100] * len(prompt_ids)
        assert labels[len(prompt_ids) : n].tolist() == completion_ids
        assert attn[n:].sum() == 0 and labels[n:].tolist() == [-100] * (len(labels) - n)  # padding
    assert (batch["labels"][1] != -100).sum() == 2  # "x" and EOS: the shorter row is padded, not learned


def test_plain_format_has_no_template_and_ends_the_prompt_at_a_token_boundary(base):
    root, path = base
    row = {"instruction": "int add(int a, int b) {\n", "output": "    return a + b;\n}\n"}
    plain = record_to_prompt_completion(row, "alpaca", "test", plain=True)
    # the prompt's trailing newline moves to the completion: prompts end where RLVR's stripped prompts end
    assert plain == {"prompt": "int add(int a, int b) {", "completion": "\n    return a + b;\n}\n"}
    cfg = tiny_cfg(root, packing=False)
    cfg.model.chat_template = "none"
    trainer, _ = build_trainer(cfg, str(path), [plain], [])
    tok = trainer.processing_class
    batch = _batch(trainer, 1)
    prompt_ids = tok(plain["prompt"], add_special_tokens=False)["input_ids"]
    completion_ids = tok(plain["completion"] + "<|endoftext|>", add_special_tokens=False)["input_ids"]
    n = len(prompt_ids) + len(completion_ids)
    assert batch["input_ids"][0][:n].tolist() == prompt_ids + completion_ids  # no "### Instruction:" anywhere
    assert batch["labels"][0][:n].tolist() == [-100] * len(prompt_ids) + completion_ids


def test_plain_format_refuses_chat_rows():
    with pytest.raises(ValueError, match="chat_template=none.*data_format=alpaca"):
        SFTConfig.model_validate({"model": {"chat_template": "none"}, "data_format": "chat"})


def test_packed_rows_restart_positions_and_mask_each_prompt(base):
    root, path = base
    data = rows(("Add.", "a+b"), ("What does Point hold?", "x y"))
    trainer, _ = build_trainer(tiny_cfg(root, packing=True), str(path), data, [])
    batch = _batch(trainer, len(trainer.train_dataset))
    assert batch["input_ids"].shape[0] == 1 and "attention_mask" not in batch  # one padding-free row
    pos, labels, ids = batch["position_ids"][0], batch["labels"][0], batch["input_ids"][0]
    starts = (pos == 0).nonzero().flatten().tolist()
    assert len(starts) == 2 and starts[0] == 0
    tok = trainer.processing_class
    for s, e in zip(starts, starts[1:] + [len(pos)]):
        assert pos[s:e].tolist() == list(range(e - s))
        learned = tok.decode(ids[s:e][labels[s:e] != -100])
        assert learned in ("a+b<|endoftext|>", "x y<|endoftext|>")
        assert "Response" in tok.decode(ids[s:e][labels[s:e] == -100])


def test_packed_loss_equals_unpacked_loss(base):
    root, path = base
    data = rows(*[(f"Question {i}: what does Point hold?", "int x; int y;" * (i + 1)) for i in range(4)])
    packed_trainer, _ = build_trainer(tiny_cfg(root, packing=True), str(path), data, [])
    padded_trainer, _ = build_trainer(tiny_cfg(root, packing=False), str(path), data, [])
    model = padded_trainer.model.eval()
    packed = _batch(packed_trainer, len(packed_trainer.train_dataset))
    padded = _batch(padded_trainer, 4)
    assert packed["input_ids"].shape[0] == 1 and padded["input_ids"].shape[0] == 4
    with torch.no_grad():
        loss_packed = model(input_ids=packed["input_ids"], position_ids=packed["position_ids"],
                            labels=packed["labels"]).loss
        loss_padded = model(**{k: padded[k] for k in ("input_ids", "attention_mask", "labels")}).loss
        # control: the same packed row without restarting positions lets samples attend to each other
        leaky = model(input_ids=packed["input_ids"], labels=packed["labels"]).loss
    assert (packed["labels"] != -100).sum() == (padded["labels"] != -100).sum()
    assert torch.allclose(loss_packed, loss_padded, atol=1e-5), (loss_packed, loss_padded)
    assert abs(leaky - loss_padded) > 1e-3


def test_a_batch_with_every_label_masked_is_an_error(base):
    root, path = base
    trainer, _ = build_trainer(tiny_cfg(root, packing=False), str(path), rows(("Add.", "a+b")), [])
    batch = _batch(trainer, 1)
    batch["labels"][:] = -100
    with pytest.raises(AllLabelsMaskedError, match="every label masked"):
        trainer.compute_loss(trainer.model, batch)


def test_records_whose_prompt_fills_the_sequence_are_dropped_and_counted(base):
    root, path = base
    data = rows(("word " * 400, "a"), ("Add.", "a+b"))
    trainer, dropped = build_trainer(tiny_cfg(root), str(path), data, [])
    assert dropped == 1


def test_lora_presets_select_attention_mlp_or_all_linear(base):
    from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

    qwen = AutoModelForCausalLM.from_pretrained(base[1])
    leaves = lambda names: sorted({n.rsplit(".", 1)[-1] for n in names})  # noqa: E731
    assert leaves(lora_target_modules(qwen, "attention")) == ["k_proj", "o_proj", "q_proj", "v_proj"]
    assert leaves(lora_target_modules(qwen, "mlp")) == ["down_proj", "gate_proj", "up_proj"]
    assert len(lora_target_modules(qwen, "all-linear")) == 2 * 7  # lm_head excluded
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64))
    assert lora_target_modules(gpt2, "attention") == ["transformer.h.0.attn.c_attn", "transformer.h.0.attn.c_proj"]
    assert lora_target_modules(gpt2, "mlp") == ["transformer.h.0.mlp.c_fc", "transformer.h.0.mlp.c_proj"]
    with pytest.raises(ValueError, match=r"selects no linear layer of this qwen3 model; its linear layers are"):
        lora_target_modules(qwen, ["c_attn"])


def test_qlora_on_cpu_is_a_clear_error(base):
    root, path = base
    with pytest.raises(ValueError, match="qlora: 4-bit NF4 .* needs a CUDA GPU"):
        build_trainer(tiny_cfg(root, method="qlora"), str(path), rows(("Add.", "a+b")), [])


def test_wsd_schedule_warms_up_holds_then_decays(base):
    root, path = base
    cfg = tiny_cfg(root, schedule="wsd", max_steps=10, warmup_ratio=0.2, decay_fraction=0.3, lr=1.0)
    trainer, _ = build_trainer(cfg, str(path), rows(("Add.", "a+b")), [])
    trainer.create_optimizer_and_scheduler(num_training_steps=10)
    lrs = []
    for _ in range(10):
        lrs.append(trainer.lr_scheduler.get_last_lr()[0])
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
    # 2 warmup steps (0, 0.5), 5 stable at 1.0, 3 cosine-decay steps
    assert lrs[:7] == pytest.approx([0.0, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0])
    assert lrs[7] == pytest.approx(1.0) and lrs[8] == pytest.approx(0.5 * (1 + torch.cos(torch.tensor(torch.pi / 3))).item())
    assert lrs[9] < lrs[8]


def test_merged_model_equals_the_adapter_model(base, tmp_path):
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    from sft.merge import merge_adapter

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base[1]),
                           LoraConfig(r=4, lora_alpha=8, target_modules=lora_target_modules(
                               AutoModelForCausalLM.from_pretrained(base[1]), "all-linear"),
                               init_lora_weights=False))  # non-zero B: the adapter really changes outputs
    model.save_pretrained(tmp_path / "adapter")
    merged_dir = merge_adapter(tmp_path / "adapter", tmp_path / "merged", base=str(base[1]))
    assert json.loads((merged_dir / "config.json").read_text())["model_type"] == "qwen3"
    assert not (merged_dir / "adapter_config.json").exists() and (merged_dir / "tokenizer.json").exists()
    ids = torch.randint(0, 300, (2, 24))
    with torch.no_grad():
        adapter_logits = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base[1]),
                                                   tmp_path / "adapter").eval()(ids).logits
        merged_logits = AutoModelForCausalLM.from_pretrained(merged_dir).eval()(ids).logits
        base_logits = AutoModelForCausalLM.from_pretrained(base[1]).eval()(ids).logits
    assert torch.allclose(adapter_logits, merged_logits, atol=1e-5)
    assert (adapter_logits - base_logits).abs().max() > 1e-2


def test_packing_is_refused_for_a_model_that_lets_packed_samples_attend_to_each_other(base):
    from transformers import AutoModelForCausalLM, GptOssConfig

    from sft.model import check_packing_isolation, packing_probe

    qwen = AutoModelForCausalLM.from_pretrained(base[1]).eval()
    probe = packing_probe(qwen, 320)  # sdpa Qwen3 derives per-sample masks from position ids
    assert probe.leak < 1e-6 and probe.leak <= probe.tolerance
    # gpt-oss (eager: it has no sdpa) builds its masks without position ids: packed samples would leak
    torch.manual_seed(0)
    gpt_oss = AutoModelForCausalLM.from_config(GptOssConfig(
        vocab_size=320, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
        head_dim=16, intermediate_size=32, num_local_experts=2, num_experts_per_tok=1, sliding_window=8,
        initializer_range=0.5), attn_implementation="eager").eval()
    with pytest.raises(ValueError, match="attn_implementation='eager'.*lets packed samples attend to each other"):
        check_packing_isolation(gpt_oss, 320)
