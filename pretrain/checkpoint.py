"""Step checkpoints for exact resume: model + optimizer through torch.distributed.checkpoint (sharded under
FSDP2, plain otherwise), plus each rank's loader/RNG state. Written to `step-N.partial` and renamed when every
rank has finished, so a directory named `step-N` is always complete.

Each checkpoint carries a `meta.json` ({"step", "loss", "suspect"}) written before the rename. One taken
because of a loss spike is `suspect` and never counts as good; one of a non-finite loss is refused outright.
Rotation keeps the newest `keep` checkpoints plus, always, the newest good one (`last_good`), so a run of
spike saves cannot rotate every good checkpoint out. Directories written before meta.json count as good."""

from __future__ import annotations

import json
import math
import random
import shutil
from collections.abc import Iterable
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


META = "meta.json"


def _step_of(path: Path) -> int:
    return int(path.name.split("-")[1])


def step_dirs(root: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    if not root.exists():
        return []
    return sorted((p for p in root.glob("step-*") if p.is_dir() and not p.name.endswith(".partial")),
                  key=_step_of)


def read_meta(path: Path) -> dict:
    """{"step", "loss", "suspect", "settings"} of a checkpoint dir; one without meta.json (older code) is good,
    loss and settings unknown."""
    meta_path = path / META
    if not meta_path.exists():
        return {"step": _step_of(path), "loss": None, "suspect": False, "settings": None}
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{meta_path}: unreadable checkpoint metadata ({e})") from e
    return {"step": int(meta.get("step", _step_of(path))), "loss": meta.get("loss"),
            "suspect": bool(meta.get("suspect", False)), "settings": meta.get("settings")}


def rotation(records: Iterable[tuple[int, bool]], keep: int) -> set[int]:
    """Steps to delete, given (step, suspect) for every complete checkpoint: all but the newest `keep`, except
    that the newest non-suspect one is always kept (pinned), however old."""
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    records = sorted(records)
    kept = {step for step, _ in records[-keep:]}
    good = [step for step, suspect in records if not suspect]
    if good:
        kept.add(good[-1])
    return {step for step, _ in records} - kept


def last_good(root: Path) -> Path | None:
    """The newest complete checkpoint that is not suspect, or None."""
    for path in reversed(step_dirs(root)):
        if not read_meta(path)["suspect"]:
            return path
    return None


def _suspect_or_keep(path: Path) -> bool:
    """Rotation's view of a checkpoint: an unreadable meta.json counts as good (kept, never deleted) rather than
    raising on rank 0 between two barriers, where the other ranks would wait forever."""
    try:
        return read_meta(path)["suspect"]
    except ValueError:
        return False


def save(root: Path, step: int, model, optimizer, extra: dict, keep: int, engine=None, *,
         loss: float | None = None, suspect: bool = False, settings: dict | None = None) -> Path:
    """Every rank calls this. `extra` is this rank's own state (loader position, RNG, counters). With a
    DeepSpeed `engine`, model and optimizer go through its own (ZeRO-partitioned) checkpoint format.
    `loss` (the step's loss, same on every rank) is recorded; a non-finite one raises ValueError before
    anything is written. `suspect=True` marks a checkpoint taken because of a loss spike: it is rotated like
    any other but never counts as good, and the newest good checkpoint is never rotated out. `settings` (what
    the run trains under) goes into meta.json, for the resume check."""
    if loss is not None and not math.isfinite(loss):
        raise ValueError(f"refusing to checkpoint step {step}: loss is {loss} (non-finite)")
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
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
    if _rank() == 0:
        (tmp / META).write_text(json.dumps(
            {"step": step, "loss": None if loss is None else float(loss), "suspect": bool(suspect),
             "settings": settings}))
    _barrier()
    if _rank() == 0:
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        dirs = {_step_of(p): p for p in step_dirs(root)}
        for old in rotation(((n, _suspect_or_keep(p)) for n, p in dirs.items()), keep):
            shutil.rmtree(dirs[old], ignore_errors=True)
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
