"""Every RLVR preset loads and validates; the GPU recipe carries the design's numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from configs.loader import load_config
from learner.config import RLVRConfig

PRESETS = Path(__file__).resolve().parents[3] / "configs" / "rlvr"


def test_tiny_cpu_preset_is_the_embedded_default():
    cfg = load_config(RLVRConfig, PRESETS / "tiny-cpu.yaml", [])
    assert cfg.model.path == "tiny" and cfg.tasks.source == "embedded" and cfg.run.staleness == 0


def test_gpu_preset_matches_the_design(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "tokenizer.json").write_text("{}")
    cfg = load_config(RLVRConfig, PRESETS / "gpu-8x.yaml", [f"model.path={tmp_path}"])
    assert cfg.rollout.samples_per_prompt == 8 and cfg.rollout.temperature == 0.8
    assert cfg.algo.lr == 5e-7 and cfg.algo.kl_coef == 0.01 and cfg.rollout.max_new_tokens == 2048
    gpus = cfg.rollout.engines * cfg.rollout.gpus_per_engine + cfg.learner.world_size * cfg.learner.gpus_per_worker
    assert gpus == 8 and cfg.learner.backend == "fsdp2"


def test_check_resources_names_every_shortfall_custom_resources_included():
    from learner.driver import check_resources

    cfg = RLVRConfig(reward={"workers": 8, "resources": {"sandbox": 8}}, rollout={"engines": 4, "gpus_per_engine": 1})
    with pytest.raises(ValueError) as err:
        check_resources(cfg, {"CPU": 64, "GPU": 8, "sandbox": 16})
    assert "needs 64 'sandbox' units (reward.workers x reward.resources.sandbox)" in str(err.value)
    assert "Ray cluster has 16" in str(err.value) and "GPUs" not in str(err.value)
    with pytest.raises(ValueError, match="'sandbox' units.*has 0"):
        check_resources(cfg, {"CPU": 64, "GPU": 8})  # no node advertises it at all: Ray would wait forever
    check_resources(cfg, {"CPU": 64, "GPU": 8, "sandbox": 64})  # enough: no error


@pytest.mark.parametrize("preset,gpus,sandbox_units,model", [
    ("gpu-1x.yaml", 1, 0, "Qwen/Qwen2.5-Coder-1.5B-Instruct"),
    ("gpu-8x.yaml", 8, 8, None),
    ("gpu-2x8.yaml", 16, 16, None)])
def test_gpu_presets_add_up_as_their_comments_say(tmp_path, preset, gpus, sandbox_units, model):
    """The arithmetic written next to each preset: GPUs of engines + learner ranks, sandbox units of the reward
    workers; the documented cluster passes check_resources and one sandbox unit fewer fails it."""
    from learner.driver import check_resources

    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "tokenizer.json").write_text("{}")
    cfg = load_config(RLVRConfig, PRESETS / preset, [] if model else [f"model.path={tmp_path}"])
    if model:
        assert cfg.model.path == model and cfg.rollout.chat_template and cfg.reward.mode == "chat"
    r, lc = cfg.rollout, cfg.learner
    assert r.engines * r.gpus_per_engine + lc.world_size * lc.gpus_per_worker == gpus
    assert cfg.model.dtype == "bfloat16" and cfg.learner.activation_checkpointing
    assert cfg.reward.workers * cfg.reward.resources.get("sandbox", 0) == sandbox_units
    cluster = {"CPU": 512, "GPU": gpus, "sandbox": sandbox_units}
    check_resources(cfg, cluster)
    if sandbox_units:
        with pytest.raises(ValueError, match="'sandbox' units"):
            check_resources(cfg, {**cluster, "sandbox": sandbox_units - 1})
