"""Where a policy comes from: a local directory, or a hub id resolved once from the local Hugging Face cache
(offline), never silently a wrong path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from configs.base import is_hub_id, resolve_model_path


def fake_cache(root: Path, repo: str, revision: str = "0123456789abcdef0123456789abcdef01234567") -> Path:
    """The layout huggingface_hub writes: models--org--name/{refs/main, snapshots/<rev>/...}."""
    base = root / ("models--" + repo.replace("/", "--"))
    snap = base / "snapshots" / revision
    snap.mkdir(parents=True)
    (base / "refs").mkdir()
    (base / "refs" / "main").write_text(revision)
    (snap / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    (snap / "tokenizer.json").write_text("{}")
    return snap


def test_a_cached_hub_id_resolves_offline_to_its_snapshot(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    snap = fake_cache(tmp_path, "acme/coder-1.5b")
    assert is_hub_id("acme/coder-1.5b")
    assert Path(resolve_model_path("acme/coder-1.5b", cache_dir=str(tmp_path))) == snap


def test_an_uncached_hub_id_offline_names_the_field_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match=r"model.path: acme/absent is not in the local Hugging Face cache.*hf download"):
        resolve_model_path("acme/absent", cache_dir=str(tmp_path))


def test_local_paths_are_not_hub_ids(tmp_path):
    assert not is_hub_id(str(tmp_path)) and not is_hub_id("outputs/sft/final") and not is_hub_id("/abs/x")
    assert resolve_model_path(str(tmp_path)) == str(tmp_path)
    with pytest.raises(ValueError, match="neither a directory nor a hub id"):
        resolve_model_path(str(tmp_path / "missing" / "deeper"))


def test_the_rlvr_config_defers_a_hub_id_and_pairs_chat_on_both_sides():
    from learner.config import RLVRConfig

    assert RLVRConfig(model={"path": "acme/coder-1.5b"}).model.path == "acme/coder-1.5b"  # checked once resolved
    with pytest.raises(ValueError, match="reward.mode: chat .* needs rollout.chat_template"):
        RLVRConfig(reward={"mode": "chat"})
    cfg = RLVRConfig(reward={"mode": "chat"}, rollout={"chat_template": True})
    assert cfg.rollout.stop == []  # a chat answer ends at EOS, not at the raw stop inside its code block


def test_chat_prompt_renders_the_request_in_the_models_template():
    from transformers import AutoTokenizer

    from learner.tiny_policy import build_tiny_policy
    from rollout.engine import chat_prompt

    tok = AutoTokenizer.from_pretrained(str(build_tiny_policy()))
    with pytest.raises(ValueError, match="has no chat template"):
        chat_prompt(tok, "int add(int a, int b) {")
    tok.chat_template = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}<|assistant|>"
    text = chat_prompt(tok, "int add(int a, int b) {")
    assert text.startswith("<|user|>Complete the following C++ function")
    assert "```cpp\nint add(int a, int b) {\n```" in text and text.endswith("<|assistant|>")
