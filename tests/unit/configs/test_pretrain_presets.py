"""Every pretraining preset loads and validates; bad overrides fail with a ConfigError naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from configs.loader import ConfigError, load_config
from pretrain.config import PretrainConfig

PRESETS = Path(__file__).resolve().parents[3] / "configs" / "pretrain"
ALL = sorted(PRESETS.glob("*.yaml"))
TINY = PRESETS / "tiny-cpu.yaml"


def test_there_are_presets():
    assert TINY in ALL


@pytest.mark.parametrize("path", ALL, ids=[p.stem for p in ALL])
def test_preset_loads(path):
    cfg = load_config(PretrainConfig, path, [])
    assert cfg.data.seq_len <= cfg.model.context or cfg.init.from_checkpoint
    assert 16 <= cfg.max_doc_tokens <= cfg.data.seq_len - 4  # room for FIM's sentinels + EOS
    assert cfg.tokenizer.vocab_size > 256 + 4


def test_tiny_cpu_preset_is_the_small_embedded_default():
    cfg = load_config(PretrainConfig, TINY, [])
    assert cfg.corpus.sources == ["embedded"] and cfg.model.arch == "dense" and cfg.model.family == "qwen3"
    assert (cfg.model.hidden_size, cfg.model.num_layers, cfg.data.seq_len) == (128, 2, 256)
    assert cfg.max_doc_tokens == 256 - 16


@pytest.mark.parametrize("overrides, field", [
    (["data.fim_rate=2"], "data.fim_rate"),
    (["model.num_kv_heads=3"], "num_kv_heads"),
    (["init.lora_rank=8"], "init.lora_rank"),
    (["data.seq_len=4096"], "data.seq_len"),
    (["train.stepz=3"], "train.stepz"),
    (["model.arch=moe", "model.moe.experts_per_token=9"], "experts_per_token"),
    (["data.max_doc_tokens=253"], "data.max_doc_tokens"),
], ids=["fim_rate", "kv_heads", "lora_without_checkpoint", "seq_len_over_context", "unknown_key", "moe_top_k",
        "max_doc_tokens"])
def test_bad_override_names_the_field(overrides, field):
    with pytest.raises(ConfigError) as err:
        load_config(PretrainConfig, TINY, overrides)
    assert field in str(err.value)
    assert "tiny-cpu.yaml" in str(err.value)


def test_the_same_overrides_are_fine_when_consistent():
    cfg = load_config(PretrainConfig, TINY, ["data.fim_rate=1", "model.num_kv_heads=4", "data.seq_len=512",
                                             "data.max_doc_tokens=508"])
    got = (cfg.data.fim_rate, cfg.model.num_kv_heads, cfg.data.seq_len, cfg.max_doc_tokens)
    assert got == (1.0, 4, 512, 508)


def test_lora_is_accepted_with_a_checkpoint_to_adapt():
    cfg = load_config(PretrainConfig, TINY, ["init.lora_rank=8", "init.from_checkpoint=/some/hf/dir"])
    assert cfg.init.lora_rank == 8
