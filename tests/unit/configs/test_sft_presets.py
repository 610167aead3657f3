"""Every SFT preset loads and validates; the recipes carry the numbers they promise; bad values name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from configs.loader import ConfigError, load_config
from sft.config import SFTConfig

PRESETS = Path(__file__).resolve().parents[3] / "configs" / "sft"
ALL = sorted(PRESETS.glob("*.yaml"))


@pytest.mark.parametrize("path", ALL, ids=[p.stem for p in ALL])
def test_preset_loads(path):
    cfg = load_config(SFTConfig, path, [])
    assert cfg.train.max_length >= 16 and cfg.checkpoint.keep >= 1


def test_the_three_recipes():
    tiny = load_config(SFTConfig, PRESETS / "tiny-cpu.yaml", [])
    assert tiny.model.name_or_path is None and tiny.data.sources == ["embedded"]  # no downloads
    qlora = load_config(SFTConfig, PRESETS / "codebase-qlora-6.7b.yaml", [])
    assert qlora.train.method == "qlora" and qlora.lora.targets == "all-linear" and qlora.model.gradient_checkpointing
    reasoning = load_config(SFTConfig, PRESETS / "reasoning-sft.yaml", [])
    assert (reasoning.train.lr, reasoning.train.epochs, reasoning.train.max_length) == (1e-5, 3, 8192)
    assert reasoning.train.method == "full" and reasoning.train.packing


@pytest.mark.parametrize("override, field", [
    ("train.method=dora", "train.method"),
    ("lora.targets=everything", "lora.targets"),
    ("train.max_length=4", "train.max_length"),
    ("parallel=zero4", "parallel"),
    ("train.lr=-1", "train.lr"),
    ("train.bogus=1", "train.bogus"),
])
def test_bad_values_name_the_field(override, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_config(SFTConfig, PRESETS / "tiny-cpu.yaml", [override])


def test_qlora_cannot_be_sharded_with_zero3():
    with pytest.raises(ConfigError, match="qlora with parallel=deepspeed_zero3"):
        load_config(SFTConfig, PRESETS / "tiny-cpu.yaml", ["train.method=qlora", "parallel=deepspeed_zero3"])
