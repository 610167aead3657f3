"""The SFT dataset builder: collects samples of the enabled kinds from each source, deduplicates them exactly,
splits them train/eval by source file (all samples of one file on one side, so nothing leaks), and writes
`{train,eval}.{alpaca,chat}.jsonl` and `stats.json` (last: its presence means the directory is complete).

Sources are directories (their working tree), git repositories (working tree + bug-fix pairs from history)
or "embedded": this machine's libstdc++ `bits/` headers plus the embedded task set's reference solutions."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from configs.base import TaskSplit
from sft import builders
from sft.cpp_parse import extract_definitions
from sft.samples import KINDS, Sample

EMBEDDED = "embedded"
Kind = Literal["file", "granular", "qa", "bugfix", "task", "repair"]


class DataConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sources: list[str] = Field(
        ["embedded"], min_length=1,
        description='directories, git repositories or "embedded" (libstdc++ bits + tasks)')
    kinds: list[Kind] = Field(list(KINDS), min_length=1, description="sample kinds to build")
    task_files: list[str] = Field([], description="task files in our format (e.g. `python -m rewards families "
                                  "--out`): prompt -> reference samples (kind task) of their training split")
    repair_tasks: list[str] = Field([], description="repair task files (`python -m rewards repair --out`): "
                                    "bug + debug state -> REASONING + fix samples (kind repair)")
    max_chars: int = Field(4000, ge=100, description="longest file chunk / granular definition (characters)")
    max_files: int | None = Field(200, ge=1, description="cap on C++ files per source, in path order")
    max_bugfix_commits: int | None = Field(500, ge=1, description="cap on fix commits mined per repository")
    qa_phrasings: int = Field(3, ge=1, le=3, description="phrasings per question/answer fact")
    include_heldout_tasks: bool = Field(False, description="also use tasks held out for evaluation (rewards)")
    split: TaskSplit = Field(default_factory=TaskSplit, description="the held-out tasks, shared by every stage")
    eval_fraction: float = Field(0.05, ge=0.0, lt=0.5, description="held-out fraction, split by source file")
    seed: int = Field(0, description="seed of the train/eval split")
    formats: list[Literal["alpaca", "chat"]] = Field(["alpaca", "chat"], min_length=1)
    system_prompt: str | None = Field(None, description="system message of chat samples (none when unset)")
    tokenizer: str | None = Field(None, description="tokenizer.json or HF directory for token-length stats; "
                                                    "whitespace tokens when unset")


def _cpp_files(root: Path, cap: int | None) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [(Path(dirpath) / f).relative_to(root).as_posix() for f in filenames
                  if f.lower().endswith(builders.CPP_SUFFIXES)]
    return sorted(found)[:cap]


def _codebase_samples(root: Path, label: str, cfg: DataConfig, git: bool) -> list[Sample]:
    samples: list[Sample] = []
    for rel in _cpp_files(root, cfg.max_files):
        text = (root / rel).read_text(encoding="utf-8", errors="replace")
        if "file" in cfg.kinds:
            samples += builders.file_samples(rel, text, cfg.max_chars)
        if "granular" in cfg.kinds or "qa" in cfg.kinds:
            definitions = extract_definitions(text, rel)
            if "granular" in cfg.kinds:
                samples += builders.granular_samples(definitions, cfg.max_chars)
            if "qa" in cfg.kinds:
                samples += builders.qa_samples(definitions, cfg.qa_phrasings)
    if "qa" in cfg.kinds:
        build_files = {p.name: p.read_text(errors="replace") for p in root.iterdir()
                       if p.is_file() and p.name in ("CMakeLists.txt", "meson.build", "Makefile", "makefile",
                                                     "GNUmakefile")}
        samples += builders.build_qa_samples(build_files, cfg.qa_phrasings)
    if git and "bugfix" in cfg.kinds:
        samples += builders.bugfix_samples(root, cfg.max_bugfix_commits)
    return [replace(s, source_file=f"{label}/{s.source_file}") for s in samples]


def _embedded_samples(cfg: DataConfig) -> list[Sample]:
    from pretrain.corpus import find_libstdcxx_dir  # local imports: only the embedded source needs them
    from rewards.tasks import load_embedded

    samples = []
    libstdcxx = find_libstdcxx_dir()
    if libstdcxx is not None and (libstdcxx / "bits").is_dir():
        samples += _codebase_samples(libstdcxx / "bits", "embedded/libstdc++/bits", cfg, git=False)
    if "task" in cfg.kinds:
        samples += [replace(s, source_file=f"embedded/{s.source_file}")
                    for s in builders.task_samples(_training_tasks(load_embedded(), cfg))]
    return samples


def collect_samples(cfg: DataConfig) -> list[Sample]:
    """Every sample of the enabled kinds from every source, in source order; ValueError for a missing
    source."""
    samples: list[Sample] = []
    for spec in dict.fromkeys(cfg.sources):  # a source named twice is read once
        if spec == EMBEDDED:
            samples += _embedded_samples(cfg)
            continue
        root = Path(spec).expanduser()
        if not root.is_dir():
            raise ValueError(f"SFT source {spec!r} does not exist or is not a directory")
        samples += _codebase_samples(root, spec.rstrip("/"), cfg, git=(root / ".git").exists())
    if "task" in cfg.kinds:
        samples += _task_file_samples(cfg.task_files, "task_files", cfg, builders.task_samples)
    if "repair" in cfg.kinds:
        samples += [replace(s, source_file=f"repair/{s.source_file}")
                    for s in _task_file_samples(cfg.repair_tasks, "repair_tasks", cfg, builders.repair_samples)]
    return samples


def _training_tasks(tasks: list, cfg: DataConfig) -> list:
    """The tasks SFT may learn: the training split, unless data.include_heldout_tasks."""
    return [t for t in tasks if cfg.include_heldout_tasks or not cfg.split.is_heldout(t.task_id)]


def _task_file_samples(paths: list[str], field: str, cfg: DataConfig, build) -> list[Sample]:
    """`build`'s samples of the training tasks of each task file in `paths` (data.`field`), each file read once."""
    from rewards.tasks import load_tasks  # local import: only task files need the rewards package

    samples: list[Sample] = []
    for path in dict.fromkeys(paths):
        if not Path(path).is_file():
            raise ValueError(f"SFT {field} file {path!r} does not exist")
        samples += build(_training_tasks(load_tasks(path), cfg))
    return samples


def deduplicate(samples: list[Sample]) -> list[Sample]:
    """Exact deduplication on (instruction, input, output); the first occurrence is kept."""
    seen: set[tuple[str, str, str]] = set()
    kept = []
    for s in samples:
        if s.key() not in seen:
            seen.add(s.key())
            kept.append(s)
    return kept


def _file_score(source_file: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}:{source_file}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_by_file(samples: list[Sample], eval_fraction: float,
                  seed: int) -> tuple[list[Sample], list[Sample]]:
    """(train, eval) by a hash of the source file: deterministic, no file on both sides, and with >= 2 files
    and a nonzero fraction each side gets at least one file."""
    scores = {f: _file_score(f, seed) for f in dict.fromkeys(s.source_file for s in samples)}
    eval_files = {f for f, score in scores.items() if score < eval_fraction}
    if eval_fraction > 0 and len(scores) >= 2:
        ranked = sorted(scores, key=lambda f: (scores[f], f))
        if not eval_files:
            eval_files = {ranked[0]}
        elif len(eval_files) == len(scores):
            eval_files.discard(ranked[-1])
    return ([s for s in samples if s.source_file not in eval_files],
            [s for s in samples if s.source_file in eval_files])


def _token_counter(tokenizer: str | None) -> Callable[[str], int]:
    if tokenizer is None:
        return lambda text: len(text.split())
    path = Path(tokenizer)
    if not path.exists():
        raise ValueError(f"tokenizer {tokenizer!r} does not exist")
    if path.is_file():
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(path))
        return lambda text: len(tok.encode(text).ids)
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(path))
    return lambda text: len(hf(text)["input_ids"])


def _percentiles(values: list[int]) -> dict[str, int]:
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731  (nearest rank)
    return {"p50": pick(0.5), "p90": pick(0.9), "max": ordered[-1]} if ordered else {}


def compute_stats(train: list[Sample], eval_: list[Sample], count_tokens: Callable[[str], int]) -> dict:
    """Counts per kind per split, files per split, and length percentiles (chars, tokens) per kind."""
    lengths: dict[str, dict] = {}
    for kind in sorted({s.kind for s in train + eval_}):
        texts = [s.prompt() + "\n" + s.output for s in train + eval_ if s.kind == kind]
        lengths[kind] = {"chars": _percentiles([len(t) for t in texts]),
                         "tokens": _percentiles([count_tokens(t) for t in texts])}
    return {"num_samples": {"train": len(train), "eval": len(eval_)},
            "kinds": {"train": dict(sorted(Counter(s.kind for s in train).items())),
                      "eval": dict(sorted(Counter(s.kind for s in eval_).items()))},
            "num_files": {"train": len({s.source_file for s in train}),
                          "eval": len({s.source_file for s in eval_})},
            "lengths": lengths}


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)


def build_dataset(cfg: DataConfig, out_dir: Path) -> dict:
    """Build, write and return the stats; ValueError for a missing source or when no sample is produced."""
    started = time.perf_counter()
    count_tokens = _token_counter(cfg.tokenizer)
    collected = collect_samples(cfg)
    if not collected:
        raise ValueError(f"no SFT samples of kinds {cfg.kinds} in sources {cfg.sources}")
    samples = deduplicate(collected)
    train, eval_ = split_by_file(samples, cfg.eval_fraction, cfg.seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "stats.json").unlink(missing_ok=True)  # absent until the directory is complete again
    for name, split in (("train", train), ("eval", eval_)):
        if "alpaca" in cfg.formats:
            _write_jsonl(out_dir / f"{name}.alpaca.jsonl", [s.to_alpaca() for s in split])
        if "chat" in cfg.formats:
            _write_jsonl(out_dir / f"{name}.chat.jsonl", [s.to_chat(cfg.system_prompt) for s in split])
    stats = compute_stats(train, eval_, count_tokens)
    stats.update(duplicates_removed=len(collected) - len(samples),
                 token_unit=cfg.tokenizer or "whitespace", seconds=round(time.perf_counter() - started, 2))
    tmp = out_dir / "stats.json.tmp"
    tmp.write_text(json.dumps(stats, indent=1))
    tmp.replace(out_dir / "stats.json")
    return stats
