"""The data stages before training: corpus -> tokenizer -> shards. Each is skipped when its output exists
(every stage writes its marker file last), so re-running a preset only does what is missing."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

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


def run_corpus(cfg: PretrainConfig) -> dict:
    from pretrain.corpus import build_corpus

    out = paths(cfg).corpus
    if (out / "stats.json").exists():
        _say(f"corpus: reusing {out}")
        return json.loads((out / "stats.json").read_text())
    _say(f"corpus: building from {cfg.corpus.sources}")
    return build_corpus(cfg.corpus, out)


def run_tokenizer(cfg: PretrainConfig) -> dict:
    from pretrain.tokenizer import build_tokenizer

    p = paths(cfg)
    report = p.tokenizer / "tokenizer_report.json"
    if cfg.init.from_checkpoint:
        if not (p.tokenizer / "tokenizer_config.json").exists():
            raise ValueError(f"init.from_checkpoint={p.tokenizer}: no tokenizer saved next to the model")
        return json.loads(report.read_text()) if report.exists() else {}
    if report.exists():
        _say(f"tokenizer: reusing {p.tokenizer}")
        return json.loads(report.read_text())
    _say(f"tokenizer: training BPE, vocab {cfg.tokenizer.vocab_size}")
    return build_tokenizer(p.corpus, p.tokenizer, cfg.tokenizer.vocab_size, cfg.tokenizer.max_train_bytes)


def load_tokenizer(cfg: PretrainConfig):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(paths(cfg).tokenizer))


def run_shards(cfg: PretrainConfig) -> dict:
    from pretrain.data import build_shards

    p = paths(cfg)
    tokenizer = None
    metas = {}
    for split, out in (("train", p.train), ("val", p.val)):
        if (out / "meta.json").exists():
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
    return metas
