"""The data stages before training: corpus -> tokenizer -> shards. Each is skipped when its output exists
(every stage writes its marker file last), so re-running a preset only does what is missing."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from configs.base import flat_settings, settings_diff
from pretrain.config import PretrainConfig


@dataclass(frozen=True)
class DataPaths:
    corpus: Path
    tokenizer: Path
    train: Path
    val: Path


def paths(cfg: PretrainConfig) -> DataPaths:
    shards = cfg.out_dir / "shards"
    tokenizer = Path(cfg.init.from_checkpoint) if cfg.init.from_checkpoint else cfg.out_dir / "tokenizer"
    return DataPaths(cfg.out_dir / "corpus", tokenizer, shards / "train", shards / "val")


def _say(message: str) -> None:
    print(f"[pretrain] {message}", file=sys.stderr, flush=True)


SETTINGS = "settings.json"


def data_settings(cfg: PretrainConfig, stage: str) -> dict:
    """What each data stage's output depends on (each includes its inputs'): it is recorded next to the output
    and checked before the output is reused."""
    corpus = {"corpus": cfg.corpus.model_dump(mode="json")}
    tokenizer = {**corpus, "tokenizer": cfg.tokenizer.model_dump(mode="json")}
    return {"corpus": corpus, "tokenizer": tokenizer,
            "shards": {**tokenizer, "max_doc_tokens": cfg.max_doc_tokens, "shard_tokens": cfg.data.shard_tokens}}[stage]


def reusable(out: Path, settings: dict, what: str) -> bool:
    """True when `out` holds a finished stage built under `settings` (or recorded none: built before records);
    an output built under other settings is an error naming each difference, never silently reused."""
    record = out / SETTINGS
    if record.exists():
        diff = settings_diff(flat_settings(json.loads(record.read_text())), flat_settings(settings))
        if diff:
            raise ValueError(f"{what} in {out} was built under other settings:\n  " + "\n  ".join(diff)
                             + f"\nUse another out_dir, set these back, or delete {out} to rebuild it.")
    return True


def check_outputs(cfg: PretrainConfig, training: bool) -> None:
    """Before anything is written (config.json included): every existing data output and the newest checkpoint
    were built under these settings, or the run stops naming the differences."""
    from configs.base import check_resume
    from pretrain import checkpoint
    from pretrain.config import resume_settings

    p = paths(cfg)
    if not cfg.init.from_checkpoint and (p.tokenizer / "tokenizer_report.json").exists():
        reusable(p.tokenizer, data_settings(cfg, "tokenizer"), "the tokenizer")
    for out, marker, stage, what in ((p.corpus, "stats.json", "corpus", "the corpus"),
                                     (p.train, "meta.json", "shards", "the train shards"),
                                     (p.val, "meta.json", "shards", "the val shards")):
        if (out / marker).exists():
            reusable(out, data_settings(cfg, stage), what)
    found = checkpoint.step_dirs(cfg.out_dir / "checkpoints") if training and cfg.checkpoint.resume else []
    if found and cfg.checkpoint.resume != "force":
        check_resume(checkpoint.read_meta(found[-1])["settings"], resume_settings(cfg), found[-1], True)


def record(out: Path, settings: dict) -> None:
    (out / SETTINGS).write_text(json.dumps(settings, indent=1))


def run_corpus(cfg: PretrainConfig) -> dict:
    from pretrain.corpus import build_corpus

    out = paths(cfg).corpus
    settings = data_settings(cfg, "corpus")
    if (out / "stats.json").exists() and reusable(out, settings, "the corpus"):
        _say(f"corpus: reusing {out}")
        return json.loads((out / "stats.json").read_text())
    _say(f"corpus: building from {cfg.corpus.sources}")
    stats = build_corpus(cfg.corpus, out)
    record(out, settings)
    return stats


def run_tokenizer(cfg: PretrainConfig) -> dict:
    from pretrain.tokenizer import build_tokenizer

    p = paths(cfg)
    report = p.tokenizer / "tokenizer_report.json"
    if cfg.init.from_checkpoint:
        if not (p.tokenizer / "tokenizer_config.json").exists():
            raise ValueError(f"init.from_checkpoint={p.tokenizer}: no tokenizer saved next to the model")
        return json.loads(report.read_text()) if report.exists() else {}
    settings = data_settings(cfg, "tokenizer")
    if report.exists() and reusable(p.tokenizer, settings, "the tokenizer"):
        _say(f"tokenizer: reusing {p.tokenizer}")
        return json.loads(report.read_text())
    _say(f"tokenizer: training BPE, vocab {cfg.tokenizer.vocab_size}")
    built = build_tokenizer(p.corpus, p.tokenizer, cfg.tokenizer.vocab_size, cfg.tokenizer.max_train_bytes)
    record(p.tokenizer, settings)
    return built


def load_tokenizer(cfg: PretrainConfig):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(paths(cfg).tokenizer))


def run_shards(cfg: PretrainConfig) -> dict:
    from pretrain.data import build_shards

    p = paths(cfg)
    tokenizer = None
    metas = {}
    settings = data_settings(cfg, "shards")
    for split, out in (("train", p.train), ("val", p.val)):
        if (out / "meta.json").exists() and reusable(out, settings, f"the {split} shards"):
            meta = json.loads((out / "meta.json").read_text())
            if meta["max_doc_tokens"] != cfg.max_doc_tokens:
                raise ValueError(f"{out} was built with max_doc_tokens={meta['max_doc_tokens']}, the config asks "
                                 f"for {cfg.max_doc_tokens}: delete it or use another out_dir")
            metas[split] = meta
            continue
        tokenizer = tokenizer or load_tokenizer(cfg)
        _say(f"shards: tokenising the {split} split")
        metas[split] = build_shards(p.corpus / f"{split}.jsonl", tokenizer, out, cfg.max_doc_tokens,
                                    cfg.data.shard_tokens)
        record(out, settings)
    return metas
