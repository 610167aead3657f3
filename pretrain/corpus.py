"""The C++ pretraining corpus builder: reads C++ files from directories, local git repositories (HEAD) and the
embedded default (this machine's libstdc++ headers + our embedded task solutions), filters, normalises and
deduplicates them (exact + MinHash near-dup), splits them into train/val by file, and writes
`train.jsonl`, `val.jsonl` and `stats.json` (last: its presence means the corpus directory is complete)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
from datasketch import MinHash, MinHashLSH
from pydantic import BaseModel, ConfigDict, Field, field_validator
from tqdm import tqdm

from configs.base import TaskSplit
from pretrain.corpus_filters import (is_binary, is_generated, is_minified, normalize_text, shingles,
                                     split_score, strip_leading_licence)

DROP_REASONS = ("too_small", "too_large", "binary", "generated", "minified", "exact_dup", "near_dup")
EMBEDDED = "embedded"
LIBSTDCXX_EXTRA_SUFFIXES = ("", ".tcc")  # libstdc++ headers are mostly extensionless; .tcc holds templates
_MINHASH_SEED = 1  # fixed, so near-dup decisions do not move with the split seed
_MINHASH_BATCH = 8192  # shingles per update_batch call: bounds the (shingles x num_perm) temporary


class CorpusConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sources: list[str] = Field(
        ["embedded"], min_length=1,
        description='directories, git repositories (read at HEAD) or "embedded" (libstdc++ + task solutions)')
    extensions: list[str] = Field(
        [".cpp", ".cc", ".cxx", ".c++", ".hpp", ".hh", ".hxx", ".h", ".ipp", ".tpp", ".inl"], min_length=1,
        description="C++ file suffixes kept (case-insensitive)")
    min_bytes: int = Field(64, ge=0, description="drop files smaller than this after normalisation")
    max_bytes: int = Field(1_000_000, ge=1, description="drop files larger than this on disk")
    max_line_length: int = Field(1000, ge=1, description="drop files with a longer line (minified)")
    max_mean_line_length: float = Field(200, gt=0, description="drop files with a longer mean line")
    near_dup_threshold: float = Field(
        0.85, gt=0.0, le=1.0, description="estimated Jaccard from which a file is a near-dup; 1.0 disables")
    num_perm: int = Field(128, ge=16, description="MinHash permutations")
    shingle_size: int = Field(5, ge=1, description="tokens per shingle for near-dup detection")
    val_fraction: float = Field(0.05, ge=0.0, lt=0.5, description="held-out fraction, split by file content")
    tabs: Literal["keep", "spaces"] = Field("keep", description='"keep" tabs or expand them to "spaces"')
    tab_width: int = Field(4, ge=1, le=16, description="columns per tab when tabs='spaces'")
    seed: int = Field(0, description="seed of the train/val split")
    split: TaskSplit = Field(default_factory=TaskSplit, description="the held-out tasks, shared by every stage: "
                             "their solutions stay out of the embedded corpus")
    max_files: int | None = Field(None, ge=1, description="cap on files per source, in path order (tests)")

    @field_validator("extensions")
    @classmethod
    def _dotted(cls, value: list[str]) -> list[str]:
        bad = [ext for ext in value if not ext.startswith(".") or len(ext) < 2]
        if bad:
            raise ValueError(f"extensions must look like '.cpp', got {bad}")
        return [ext.lower() for ext in value]


@dataclass(frozen=True)
class _Source:
    """One named input: its files as sorted (relative path, size in bytes), and a reader of their contents."""
    name: str
    root: str
    files: list[tuple[str, int]]
    read: Callable[[list[str]], Iterator[bytes]]  # contents of the given paths, in order


def find_libstdcxx_dir() -> Path | None:
    """This machine's libstdc++ header directory (the one holding `vector`), from g++'s include search list,
    else the highest version under /usr/include/c++; None when there is none."""
    try:
        log = subprocess.run(["g++", "-xc++", "-E", "-v", "-"], input="", capture_output=True, text=True,
                             timeout=60).stderr
    except (OSError, subprocess.SubprocessError):
        log = ""
    listing = log.partition("#include <...> search starts here:")[2].partition("End of search list.")[0]
    for line in listing.splitlines():
        candidate = Path(line.strip().split(" (")[0])
        if line.strip() and (candidate / "vector").is_file() and (candidate / "bits").is_dir():
            return candidate.resolve()
    versions = [p for p in Path("/usr/include/c++").glob("*") if (p / "vector").is_file()]
    versions.sort(key=lambda p: [int(n) for n in re.findall(r"\d+", p.name)])
    return versions[-1].resolve() if versions else None


def _wanted(path: str, suffixes: set[str]) -> bool:
    return Path(path).suffix.lower() in suffixes


def _read_under(root: Path, paths: list[str]) -> Iterator[bytes]:
    return ((root / p).read_bytes() for p in paths)


def _directory_source(name: str, root: Path, suffixes: set[str], cap: int | None) -> _Source:
    files = []
    resolved_root = root.resolve()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != ".git"]
        for filename in filenames:
            path = Path(dirpath) / filename
            rel = path.relative_to(root).as_posix()
            if not _wanted(rel, suffixes):
                continue
            target = path.resolve()
            # Symlinks are followed only when they stay inside the source directory.
            if not target.is_file() or not target.is_relative_to(resolved_root):
                continue
            files.append((rel, target.stat().st_size))
    files = sorted(files)[:cap]
    return _Source(name, str(root), files, partial(_read_under, root))


def _git(repo: Path, *args: str, stdin: bytes | None = None, check: bool = True) -> bytes | None:
    """git's stdout, or None when it fails and `check` is off."""
    try:
        done = subprocess.run(["git", "-c", "safe.directory=*", "-C", str(repo), *args], input=stdin,
                              capture_output=True)
    except FileNotFoundError:
        raise ValueError(f"{repo}: is a git repository but git is not installed") from None
    if done.returncode and check:
        raise ValueError(f"{repo}: git {args[0]} failed: {done.stderr.decode(errors='replace').strip()}")
    return None if done.returncode else done.stdout


def _git_source(name: str, repo: Path, suffixes: set[str], cap: int | None) -> _Source:
    """Committed files at HEAD only: untracked files and uncommitted edits are not part of a repository."""
    if _git(repo, "rev-parse", "--verify", "-q", "HEAD", check=False) is None:
        return _Source(name, str(repo), [], lambda paths: iter(()))  # no commit yet: nothing committed
    blobs: dict[str, str] = {}
    files = []
    for entry in (_git(repo, "ls-tree", "-r", "-z", "-l", "--full-tree", "HEAD") or b"").split(b"\0"):
        if not entry:
            continue
        meta, _, path_bytes = entry.partition(b"\t")
        mode, kind, sha, size = meta.decode().split()
        path = path_bytes.decode("utf-8", errors="surrogateescape")
        if kind != "blob" or mode == "120000" or not _wanted(path, suffixes):  # skip symlinks, submodules
            continue
        blobs[path] = sha
        files.append((path, int(size)))
    files = sorted(files)[:cap]

    def read(paths: list[str]) -> Iterator[bytes]:
        for start in range(0, len(paths), 256):  # batches bound the memory of one cat-file call
            out = _git(repo, "cat-file", "--batch",
                       stdin="".join(blobs[p] + "\n" for p in paths[start:start + 256]).encode()) or b""
            pos = 0
            while pos < len(out):
                header_end = out.index(b"\n", pos)
                size = int(out[pos:header_end].split()[2])
                yield out[header_end + 1:header_end + 1 + size]
                pos = header_end + 1 + size + 1  # content is followed by a newline
    return _Source(name, str(repo), files, read)


def _embedded_sources(suffixes: set[str], cap: int | None, split: TaskSplit) -> list[_Source]:
    from rewards.tasks import load_embedded  # local import: only needed here

    sources = []
    libstdcxx = find_libstdcxx_dir()
    if libstdcxx is not None:
        accepted = suffixes | set(LIBSTDCXX_EXTRA_SUFFIXES)
        sources.append(_directory_source("embedded/libstdc++", libstdcxx, accepted, cap))
    # Held-out tasks stay out of the corpus: their prompts are the compile-rate eval's (pretrain.evaluate).
    docs = {t.task_id: (t.prompt + (t.reference or "")).encode() for t in split.split(load_embedded())[0]}
    files = sorted((path, len(text)) for path, text in docs.items())[:cap]
    sources.append(_Source("embedded/tasks", "rewards.tasks.load_embedded", files,
                           lambda paths: (docs[p] for p in paths)))
    return sources


def _sources(config: CorpusConfig) -> list[_Source]:
    suffixes = set(config.extensions)
    sources: list[_Source] = []
    for spec in dict.fromkeys(config.sources):  # a source named twice is read once
        if spec == EMBEDDED:
            sources += _embedded_sources(suffixes, config.max_files, config.split)
            continue
        path = Path(spec).expanduser()
        if not path.exists():
            raise ValueError(f"corpus source {spec!r} does not exist")
        if path.is_file():
            files = [(path.name, path.stat().st_size)] if _wanted(path.name, suffixes) else []
            sources.append(_Source(spec, str(path), files, partial(_read_under, path.parent)))
        elif (path / ".git").exists():
            sources.append(_git_source(spec, path, suffixes, config.max_files))
        else:
            sources.append(_directory_source(spec, path, suffixes, config.max_files))
    return sorted(sources, key=lambda s: s.name)


class _NearDupIndex:
    """MinHash LSH over licence-stripped shingles; a candidate is confirmed by its estimated Jaccard."""

    def __init__(self, config: CorpusConfig) -> None:
        self.threshold = config.near_dup_threshold
        self.shingle_size = config.shingle_size
        self.template = MinHash(num_perm=config.num_perm, seed=_MINHASH_SEED)
        self.lsh: MinHashLSH | None = None
        if self.threshold < 1.0:
            try:
                self.lsh = MinHashLSH(threshold=self.threshold, num_perm=config.num_perm)
            except ValueError:  # near 1, datasketch's optimiser picks < 2 bands: use 2 wide bands
                self.lsh = MinHashLSH(threshold=self.threshold, num_perm=config.num_perm,
                                      params=(2, config.num_perm // 2))
        self.signatures: dict[str, np.ndarray] = {}

    def is_near_dup(self, key: str, text: str) -> bool:
        """True when `text` is a near-dup of an earlier text; otherwise remembers it under `key`."""
        if self.lsh is None:
            return False
        grams = [g.encode() for g in shingles(strip_leading_licence(text), self.shingle_size)]
        if not grams:  # all comment: exact dedup covers it, and an empty MinHash matches every other one
            return False
        minhash = MinHash(num_perm=self.template.num_perm, permutations=self.template.permutations)
        for start in range(0, len(grams), _MINHASH_BATCH):
            minhash.update_batch(grams[start:start + _MINHASH_BATCH])
        for other in self.lsh.query(minhash):
            if float(np.mean(self.signatures[other] == minhash.hashvalues)) >= self.threshold:
                return True
        self.lsh.insert(key, minhash)
        self.signatures[key] = minhash.hashvalues
        return False


def _reject(data: bytes, config: CorpusConfig) -> tuple[str | None, str]:
    """(drop reason or None, normalised text) for one file's raw contents, before deduplication."""
    if len(data) > config.max_bytes:
        return "too_large", ""
    if is_binary(data):
        return "binary", ""
    text = normalize_text(data.decode("utf-8"), config.tabs, config.tab_width)
    if len(text.encode()) < config.min_bytes:
        return "too_small", text
    if is_generated(text):
        return "generated", text
    if is_minified(text, config.max_line_length, config.max_mean_line_length):
        return "minified", text
    return None, text


def _write_atomic(path: Path, lines: Iterator[str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.writelines(lines)
    os.replace(tmp, path)


def build_corpus(config: CorpusConfig, out_dir: Path, progress: bool = True) -> dict:
    """Build the corpus described by `config` into `out_dir` (train.jsonl, val.jsonl, then stats.json) and
    return the stats. Raises ValueError for a missing source or when no file survives."""
    out_dir = Path(out_dir)
    sources = _sources(config)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "stats.json").unlink(missing_ok=True)  # a rebuild in progress must not look complete
    dropped = dict.fromkeys(DROP_REASONS, 0)
    seen_hashes: set[str] = set()
    near = _NearDupIndex(config)
    kept: list[tuple[str, int, str]] = []  # (content hash, bytes, extension), in output order
    staging = out_dir / "kept.jsonl.tmp"
    bar = tqdm(total=sum(len(s.files) for s in sources), desc="corpus", unit="file", file=sys.stderr,
               disable=not progress)
    try:
        with staging.open("w", encoding="utf-8") as stage:
            for source in sources:
                readable = [p for p, size in source.files if size <= config.max_bytes]
                dropped["too_large"] += len(source.files) - len(readable)  # never read at all
                bar.update(len(source.files) - len(readable))
                for path, data in zip(readable, source.read(readable), strict=True):
                    bar.update(1)
                    reason, text = _reject(data, config)
                    digest = hashlib.sha256(text.encode()).hexdigest() if reason is None else ""
                    if reason is None and digest in seen_hashes:
                        reason = "exact_dup"
                    if reason is None and near.is_near_dup(digest, text):
                        reason = "near_dup"
                    if reason is not None:
                        dropped[reason] += 1
                        continue
                    seen_hashes.add(digest)
                    kept.append((digest, len(text.encode()), Path(path).suffix.lower() or "(none)"))
                    stage.write(json.dumps({"text": text, "source": source.name, "path": path}) + "\n")
        bar.close()
        if not kept:
            raise ValueError(f"no C++ files survived from sources {config.sources} (dropped: {dropped})")
        is_val = _assign_split([digest for digest, _, _ in kept], config)
        for name, want in (("train.jsonl", False), ("val.jsonl", True)):
            with staging.open(encoding="utf-8") as stage:
                lines = (line for line, val in zip(stage, is_val, strict=True) if val == want)
                _write_atomic(out_dir / name, lines)
        stats = _stats(config, sources, kept, is_val, dropped)
        _write_atomic(out_dir / "stats.json", iter([json.dumps(stats, indent=2) + "\n"]))
        return stats
    finally:
        bar.close()
        for name in ("kept.jsonl", "train.jsonl", "val.jsonl", "stats.json"):  # leftovers of a failed build
            (out_dir / f"{name}.tmp").unlink(missing_ok=True)


def _assign_split(digests: list[str], config: CorpusConfig) -> list[bool]:
    """Validation membership per kept file: by content hash, then forced so that neither split is empty (with
    >= 2 files): the train file closest to the cut moves to val, or the val file furthest from it to train."""
    scores = [split_score(d, config.seed) for d in digests]
    is_val = [s < config.val_fraction for s in scores]
    if len(digests) >= 2 and not any(is_val):
        is_val[min(range(len(scores)), key=scores.__getitem__)] = True
    if all(is_val):
        is_val[max(range(len(scores)), key=scores.__getitem__)] = False
    return is_val


def _stats(config: CorpusConfig, sources: list[_Source], kept: list[tuple[str, int, str]], is_val: list[bool],
           dropped: dict[str, int]) -> dict:
    per_extension: dict[str, dict[str, int]] = {}
    for _, size, ext in kept:
        entry = per_extension.setdefault(ext, {"files": 0, "bytes": 0})
        entry["files"] += 1
        entry["bytes"] += size
    dups = dropped["exact_dup"] + dropped["near_dup"]
    return {
        "sources": {s.name: s.root for s in sources},
        "files_seen": sum(len(s.files) for s in sources),
        "files_kept": len(kept),
        "bytes_seen": sum(size for s in sources for _, size in s.files),
        "bytes_kept": sum(size for _, size, _ in kept),
        "train_files": is_val.count(False),
        "val_files": is_val.count(True),
        "train_bytes": sum(size for (_, size, _), val in zip(kept, is_val) if not val),
        "val_bytes": sum(size for (_, size, _), val in zip(kept, is_val) if val),
        "per_extension": dict(sorted(per_extension.items())),
        "dropped": dropped,
        "dedup_rate": dups / (len(kept) + dups) if dups else 0.0,
        "config": config.model_dump(),
    }
