"""Checkpoints: the policy in Hugging Face format (loads in vLLM/PEFT/TRL) plus what exact resume needs (each
learner rank's model+optimizer+RNG, the driver's step, policy version and counters). A checkpoint becomes
visible only when complete: it is written under a temporary name and renamed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

HF_SIDE_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                 "special_tokens_map.json", "vocab.json", "merges.txt", "tokenizer.model", "chat_template.jinja")


def save_hf_policy(state: dict, source_model: str | Path, out: str | Path) -> Path:
    """Weights from the learner + config/tokenizer files of the model the run started from."""
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(out / "model.safetensors"),
              metadata={"format": "pt"})
    for name in HF_SIDE_FILES:
        if (Path(source_model) / name).exists():
            shutil.copy2(Path(source_model) / name, out / name)
    return out


def checkpoint_dir(out_dir: str | Path, step: int) -> Path:
    return Path(out_dir) / "checkpoints" / f"step_{step:06d}"


def begin(out_dir: str | Path, step: int) -> Path:
    tmp = checkpoint_dir(out_dir, step).with_suffix(".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def commit(tmp: Path, driver_state: dict) -> Path:
    (tmp / "driver_state.json").write_text(json.dumps(driver_state, indent=1))
    final = tmp.with_suffix("")
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return final


def latest(out_dir: str | Path) -> Path | None:
    """The newest complete checkpoint (partial ones from a killed run are ignored)."""
    root = Path(out_dir) / "checkpoints"
    done = sorted(p for p in root.glob("step_*") if p.suffix == "" and (p / "driver_state.json").exists())
    return done[-1] if done else None


def read_driver_state(ckpt: Path) -> dict:
    return json.loads((ckpt / "driver_state.json").read_text())
