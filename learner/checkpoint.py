"""Checkpoints: the policy in Hugging Face format (loads in vLLM/PEFT/TRL) plus what exact resume needs (each
learner rank's model+optimizer+RNG, the driver's step, policy version and counters). A checkpoint becomes
visible only when complete: it is written under a temporary name and renamed."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

HF_SIDE_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                 "special_tokens_map.json", "vocab.json", "merges.txt", "tokenizer.model", "chat_template.jinja")


def save_hf_policy(state: dict, source_model: str | Path, out: str | Path, max_shard_size: int | str = "5GB") -> Path:
    """Weights from the learner + config/tokenizer files of the model the run started from. Sharded the way
    `save_pretrained` shards (`model-0000i-of-0000n.safetensors` + `model.safetensors.index.json` above
    `max_shard_size`; one `model.safetensors` below), so a 32B policy is not one 64 GB file and loads in vLLM,
    transformers, PEFT and TRL as any hub checkpoint does."""
    from huggingface_hub import save_torch_state_dict

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_torch_state_dict(state, out, max_shard_size=max_shard_size, metadata={"format": "pt"})
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


def resume_point(out_dir: str | Path, resume: bool | str, resume_from: str | Path | None = None) -> Path | None:
    """The checkpoint a run continues from: its own newest one; else, with `resume_from`, that checkpoint
    directory or that run's newest one; None to start from step 0 (or with resume=False)."""
    if resume is False:
        return None
    own = latest(out_dir)
    if own is not None or resume_from is None:
        return own
    src = Path(resume_from)
    if (src / "driver_state.json").is_file():
        return src
    found = latest(src)
    if found is None:
        raise ValueError(f"run.resume_from={resume_from}: no complete checkpoint there (a run directory with "
                         f"checkpoints/step_N/driver_state.json, or one step_N directory)")
    return found


def prune(out_dir: str | Path, keep: int) -> list[Path]:
    """Delete all but the newest `keep` complete checkpoints (keep=0: none deleted); returns what went."""
    if keep <= 0:
        return []
    root = Path(out_dir) / "checkpoints"
    done = sorted(p for p in root.glob("step_*") if p.suffix == "" and (p / "driver_state.json").exists())
    gone = done[:-keep]
    for path in gone:
        shutil.rmtree(path)
    return gone


RUN_OUTPUTS = ("checkpoints", "metrics.jsonl", "rollouts", "tensorboard", "report.html", "config.json")


def set_aside(out_dir: str | Path) -> Path | None:
    """run.resume=false over an earlier run: its outputs move to `set-aside-<time>/` (never deleted), so the new
    run neither continues nor appends to them."""
    out = Path(out_dir)
    present = [out / name for name in RUN_OUTPUTS if (out / name).exists()]
    if not present:
        return None
    dest = out / f"set-aside-{time.strftime('%Y%m%d-%H%M%S')}"
    dest.mkdir()
    for path in present:
        path.rename(dest / path.name)
    return dest
