"""Step checkpoints for exact resume: model + optimizer through torch.distributed.checkpoint (sharded under
FSDP2, plain otherwise), plus each rank's loader/RNG state. Written to `step-N.partial` and renamed when every
rank has finished, so a directory named `step-N` is always complete; the newest `keep` are kept."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict, get_optimizer_state_dict, set_model_state_dict, set_optimizer_state_dict)


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def step_dirs(root: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    if not root.exists():
        return []
    return sorted((p for p in root.glob("step-*") if p.is_dir() and not p.name.endswith(".partial")),
                  key=lambda p: int(p.name.split("-")[1]))


def save(root: Path, step: int, model, optimizer, extra: dict, keep: int, engine=None) -> Path:
    """Every rank calls this. `extra` is this rank's own state (loader position, RNG, counters). With a
    DeepSpeed `engine`, model and optimizer go through its own (ZeRO-partitioned) checkpoint format."""
    final = root / f"step-{step:07d}"
    tmp = final.with_name(final.name + ".partial")
    if _rank() == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    _barrier()
    if engine is not None:
        engine.save_checkpoint(str(tmp / "deepspeed"), tag="state")
    else:
        state = {"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, optimizer)}
        dcp.save(state, checkpoint_id=str(tmp))
    torch.save({**extra, "rng": rng_state()}, tmp / f"extra-rank{_rank()}.pt")
    _barrier()
    if _rank() == 0:
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in step_dirs(root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    _barrier()
    return final


def load(path: Path, model, optimizer, engine=None) -> dict:
    """Restore model, optimizer and RNG in place; returns this rank's extra state."""
    if engine is not None:
        if not (path / "deepspeed").exists():
            raise ValueError(f"{path} was not written by DeepSpeed (train.parallel changed?)")
        engine.load_checkpoint(str(path / "deepspeed"), tag="state")
    else:
        state = {"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, optimizer)}
        dcp.load(state, checkpoint_id=str(path))
        set_model_state_dict(model, state["model"])
        set_optimizer_state_dict(model, optimizer, state["optim"])
    extra_path = path / f"extra-rank{_rank()}.pt"
    if not extra_path.exists():
        raise ValueError(f"{path}: no state for rank {_rank()} (was it written with another world size?)")
    extra = torch.load(extra_path, weights_only=False)
    set_rng_state(extra.pop("rng"))
    return extra
