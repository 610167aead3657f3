"""What every stage's config shares: the strict base model and the one held-out task split.

The split decides which tasks no stage may train on. Pretraining leaves the held-out tasks out of its corpus,
SFT out of its data, RLVR out of its prompts; evaluation scores only them. One `TaskSplit` (fraction, seed)
decides it everywhere, each stage records it in its `config.json`, and a stage that starts from another
stage's checkpoint refuses a different split (`check_lineage`): a split changed in one stage only would let
another train on tasks this one treats as held out.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class StrictModel(BaseModel):
    """Unknown keys are errors (a typo in a preset must not silently fall back to a default)."""

    model_config = ConfigDict(extra="forbid")


_DERIVED = re.compile(r"/repair-\d+$")


def origin_task_id(task_id: str) -> str:
    """The task a derived task was built from (`ID/repair-N` -> `ID`); any other id is its own origin."""
    return _DERIVED.sub("", task_id)


class TaskSplit(StrictModel):
    heldout_fraction: float = Field(0.25, ge=0.0, lt=1.0, description="share of tasks held out of every "
                                    "stage's training data and used for evaluation")
    seed: int = Field(0, description="seed of the split's hash (a different seed draws a different held-out set)")

    model_config = ConfigDict(extra="forbid", frozen=True)

    def is_heldout(self, task_id: str) -> bool:
        """Deterministic by task id: stable across runs, machines and task order. A task derived from another
        (a repair task `ID/repair-N`, rewards.repair) is on its origin's side: a fix of a held-out task's bug
        would teach its reference."""
        digest = hashlib.sha256(f"{self.seed}:{origin_task_id(task_id)}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < self.heldout_fraction

    def split(self, tasks: list) -> tuple[list, list]:
        """(train, held out), each in input order. `tasks` are anything with a `task_id`."""
        train, heldout = [], []
        for t in tasks:
            (heldout if self.is_heldout(t.task_id) else train).append(t)
        return train, heldout


def find_split(record) -> dict | None:
    """The first `split`-shaped value ({heldout_fraction, seed}) in a stage's config.json, at any depth."""
    if not isinstance(record, dict):
        return None
    if set(record) == {"heldout_fraction", "seed"}:
        return record
    for value in record.values():
        if isinstance(value, dict) and (found := find_split(value)) is not None:
            return found
    return None


def _trained_on_heldout(record) -> bool:
    if isinstance(record, dict):
        return record.get("include_heldout_tasks") is True or any(_trained_on_heldout(v) for v in record.values())
    return False


def check_lineage(model_path: str | Path, split: TaskSplit, field: str, own_output: bool = False) -> None:
    """Refuse to continue from a checkpoint (or into an output directory) whose stage recorded a different split.

    A stage writes `config.json` (its whole config) in its output directory and its checkpoints below it
    (`<out>/final`, `<out>/checkpoints/step_N/policy`); an HF `config.json` has no split and is skipped. Each
    stage also calls this on its own output directory before it writes its record there: resuming (or reusing a
    corpus) under another split would mix the two (`own_output=True`: a run may resume itself even if it trains
    on its held-out tasks on purpose)."""
    path = Path(model_path).resolve()
    for parent in [path, *list(path.parents)[:3]]:
        record_file = parent / "config.json"
        if not record_file.is_file():
            continue
        try:
            record = json.loads(record_file.read_text())
        except (OSError, ValueError):
            continue
        recorded = find_split(record)
        if recorded is None:
            continue
        if not own_output and _trained_on_heldout(record):
            raise ValueError(f"{field}: {model_path} comes from a run that trained on its held-out tasks too "
                             f"(include_heldout_tasks in {record_file}); held-out evaluation of anything built "
                             f"on it would be meaningless")
        theirs = TaskSplit(**recorded)
        if theirs != split:
            raise ValueError(
                f"{field}: this run holds out tasks by {split.model_dump()} but {model_path} comes from a run that "
                f"recorded {theirs.model_dump()} in {record_file}; with different splits one trains on tasks the "
                f"other holds out. Use the same split in every stage (or another output directory).")
        return


HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def is_hub_id(path: str) -> bool:
    """`org/name` that is not a local path: a Hugging Face hub model id."""
    return bool(HUB_ID.match(path)) and not Path(path).exists()


def resolve_model_path(path: str, field: str = "model.path", cache_dir: str | None = None) -> str:
    """A local checkpoint directory as is; a hub id resolved ONCE to its snapshot directory in the local Hugging
    Face cache (works offline when the model is cached), downloading only when it is not cached and the hub is
    reachable (HF_HUB_OFFLINE unset). Config, tokenizer and weights only."""
    if not is_hub_id(path):
        if not Path(path).is_dir():
            raise ValueError(f"{field}: {path} is neither a directory nor a hub id (org/name)")
        return path
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return snapshot_download(path, local_files_only=True, cache_dir=cache_dir)
    except LocalEntryNotFoundError:
        if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
            raise ValueError(f"{field}: {path} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set; "
                             f"run `hf download {path}` where the hub is reachable (or point {field} at a "
                             f"directory)") from None
    patterns = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"]
    try:
        return snapshot_download(path, cache_dir=cache_dir, allow_patterns=patterns)
    except Exception as exc:  # not on the hub, no network, gated: say which field and what was tried
        raise ValueError(f"{field}: {path} is not a local directory, not in the local Hugging Face cache, and could "
                         f"not be downloaded ({type(exc).__name__}: {exc})") from None


# ---- resume that cannot surprise ------------------------------------------------------------------------------
def flat_settings(data: dict, ignore: tuple[str, ...] = (), prefix: str = "") -> dict:
    """A config dump as {dotted key: value}, without the keys (or key prefixes ending in '.') in `ignore`: the
    settings a checkpoint was trained under, which a resume must not silently change."""
    out = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if dotted in ignore or any(i.endswith(".") and dotted.startswith(i) for i in ignore):
            continue
        if isinstance(value, dict) and value:
            out.update(flat_settings(value, ignore, dotted + "."))
        else:
            out[dotted] = value
    return out


def settings_hash(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def settings_diff(recorded: dict, current: dict) -> list[str]:
    """'key: recorded -> current' for every setting that differs (added and removed keys included)."""
    missing = object()
    lines = []
    for key in sorted(set(recorded) | set(current)):
        old, new = recorded.get(key, missing), current.get(key, missing)
        if old != new:
            show = lambda v: "(absent)" if v is missing else json.dumps(v, default=str)  # noqa: E731
            lines.append(f"{key}: {show(old)} -> {show(new)}")
    return lines


def check_resume(recorded: dict | None, current: dict, checkpoint: str | Path, resume: bool | str) -> list[str]:
    """Refuse to resume `checkpoint` under settings other than those it recorded, listing each difference, unless
    resume="force" (then the differences are returned for the caller to log). A checkpoint without a record
    (written before records existed) resumes as before."""
    if recorded is None or settings_hash(recorded) == settings_hash(current):
        return []
    diff = settings_diff(recorded, current)
    if resume == "force":
        return diff
    raise ValueError(f"{checkpoint} was trained under other settings; resuming would silently mix two runs:\n  "
                     + "\n  ".join(diff) + "\nUse another run.out_dir for a new run, set these back to continue, "
                     "or run.resume=force to continue with the new settings.")
