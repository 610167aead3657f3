"""Tokenised shards on disk and the stateful loader that packs them into training windows.

A split (train/val) is a directory of shards. Each shard holds the token ids of its documents (`.tokens`,
uint16 or uint32, memory-mapped), their UTF-8 text (`.text`, needed to re-tokenise the three FIM pieces) and
an index of offsets (`.index.npy`: token start/end, byte start/end per document). `meta.json`, written last,
marks a complete split. Documents longer than `max_doc_tokens` are cut into consecutive pieces at token
boundaries, so every piece fits in one window and can take part in FIM.

The loader walks a per-epoch permutation of documents (each data-parallel rank takes every world-th one),
packs them with `pretrain.fim.Packer` and yields `(input_ids, position_ids, labels)` batches. Its position,
the packer's buffers and the RNG are in `state_dict()`, which checkpoints store per rank.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from pretrain.fim import FimSpecials, Packer, positions_and_labels


def build_shards(corpus_jsonl: Path, tokenizer, out_dir: Path, max_doc_tokens: int,
                 shard_tokens: int = 50_000_000, batch_docs: int = 256) -> dict:
    """Tokenise a corpus split into shards under `out_dir`; returns (and writes) its meta."""
    dtype = np.uint16 if len(tokenizer) <= 65536 else np.uint32
    tmp = out_dir.with_name(out_dir.name + ".partial")
    tmp.mkdir(parents=True, exist_ok=True)
    writer = _ShardWriter(tmp, dtype, shard_tokens)
    lines = corpus_jsonl.read_text().splitlines()
    for start in tqdm(range(0, len(lines), batch_docs), desc=f"tokenise {corpus_jsonl.name}", leave=False):
        texts = [json.loads(line)["text"] for line in lines[start:start + batch_docs]]
        enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
        for text, ids, offsets in zip(texts, enc["input_ids"], enc["offset_mapping"]):
            for lo, hi in piece_bounds(offsets, max_doc_tokens):
                char_lo = 0 if lo == 0 else offsets[lo][0]
                char_hi = len(text) if hi == len(ids) else offsets[hi][0]
                writer.add(ids[lo:hi], text[char_lo:char_hi])
    meta = writer.close()
    meta.update(max_doc_tokens=max_doc_tokens, source_docs=len(lines), dtype=np.dtype(dtype).name)
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    tmp.rename(out_dir)
    return meta


def piece_bounds(offsets: list[tuple[int, int]], max_tokens: int) -> list[tuple[int, int]]:
    """Token ranges of at most `max_tokens`, cut only between characters: byte-level BPE can split one
    character into several tokens, and a piece's text must be exactly what its tokens spell (FIM re-tokenises
    it). A single character longer than `max_tokens` tokens makes its piece a few tokens longer instead."""
    clean = lambda k: offsets[k][0] >= offsets[k - 1][1]  # noqa: E731 - token k starts a new character
    bounds, lo, n = [], 0, len(offsets)
    while lo < n:
        hi = min(lo + max_tokens, n)
        back = hi
        while back < n and back > lo and not clean(back):
            back -= 1
        if back == lo:  # no boundary inside the range: extend to the next one
            back = hi
            while back < n and not clean(back):
                back += 1
        bounds.append((lo, back))
        lo = back
    return bounds


class _ShardWriter:
    def __init__(self, out: Path, dtype, shard_tokens: int) -> None:
        self.out, self.dtype, self.shard_tokens = out, dtype, shard_tokens
        self.shards: list[dict] = []
        self.num_tokens = self.num_bytes = self.num_docs = 0
        self._open()

    def _open(self) -> None:
        name = f"shard-{len(self.shards):05d}"
        self.name, self.tok_fh, self.txt_fh = name, open(self.out / f"{name}.tokens", "wb"), open(
            self.out / f"{name}.text", "wb")
        self.index: list[tuple[int, int, int, int]] = []
        self.tok_pos = self.byte_pos = 0

    def add(self, ids: list[int], text: str) -> None:
        raw = text.encode()
        self.tok_fh.write(np.asarray(ids, dtype=self.dtype).tobytes())
        self.txt_fh.write(raw)
        self.index.append((self.tok_pos, self.tok_pos + len(ids), self.byte_pos, self.byte_pos + len(raw)))
        self.tok_pos += len(ids)
        self.byte_pos += len(raw)
        self.num_tokens += len(ids)
        self.num_bytes += len(raw)
        self.num_docs += 1
        if self.tok_pos >= self.shard_tokens:
            self._flush()
            self._open()

    def _flush(self) -> None:
        self.tok_fh.close()
        self.txt_fh.close()
        np.save(self.out / f"{self.name}.index.npy", np.asarray(self.index, dtype=np.int64).reshape(-1, 4))
        self.shards.append({"name": self.name, "docs": len(self.index), "tokens": self.tok_pos})

    def close(self) -> dict:
        self._flush()
        return {"shards": self.shards, "num_docs": self.num_docs, "num_tokens": self.num_tokens,
                "num_bytes": self.num_bytes}


class DocStore:
    """Random access to the documents of one split, memory-mapped."""

    def __init__(self, split_dir: Path) -> None:
        meta_path = split_dir / "meta.json"
        if not meta_path.exists():
            raise ValueError(f"{split_dir}: no meta.json, so not a complete shard directory (rebuild it)")
        self.meta = json.loads(meta_path.read_text())
        self._tokens, self._texts, rows = [], [], []
        for shard_id, shard in enumerate(s for s in self.meta["shards"] if s["docs"]):
            base = split_dir / shard["name"]
            self._tokens.append(np.memmap(f"{base}.tokens", dtype=self.meta["dtype"], mode="r"))
            self._texts.append(np.memmap(f"{base}.text", dtype=np.uint8, mode="r") if base.with_suffix(
                ".text").stat().st_size else np.zeros(0, np.uint8))
            index = np.load(f"{base}.index.npy")
            rows.append(np.column_stack([np.full(len(index), shard_id), index]))
        self.index = np.concatenate(rows) if rows else np.zeros((0, 5), np.int64)
        if not len(self.index):
            raise ValueError(f"{split_dir}: no documents")

    def __len__(self) -> int:
        return len(self.index)

    def tokens(self, i: int) -> list[int]:
        shard, t0, t1, _, _ = self.index[i]
        return self._tokens[shard][t0:t1].tolist()

    def text(self, i: int) -> str:
        shard, _, _, b0, b1 = self.index[i]
        return bytes(self._texts[shard][b0:b1]).decode()


@dataclass
class LoaderConfigView:
    """What the loader needs from the data config (kept small so tests can build one by hand)."""

    seq_len: int
    micro_batch_size: int
    fim_rate: float = 0.5
    spm_rate: float = 0.5
    seed: int = 0


class PackedLoader:
    """Endless packed batches for one data-parallel rank; exact-resume state via state_dict()."""

    def __init__(self, store: DocStore, tokenizer, cfg: LoaderConfigView, specials: FimSpecials | None,
                 rank: int = 0, world_size: int = 1, shuffle: bool = True) -> None:
        if len(store) < world_size:
            raise ValueError(f"{len(store)} documents cannot feed {world_size} data-parallel ranks")
        self.store, self.cfg, self.rank, self.world, self.shuffle = store, cfg, rank, world_size, shuffle
        self.epoch, self.cursor = 0, 0
        self._order = self._epoch_order()
        encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
        self.packer = Packer(cfg.seq_len, self._next_doc, encode, specials, cfg.fim_rate, cfg.spm_rate,
                             seed=cfg.seed * 1000 + rank)

    def _epoch_order(self) -> np.ndarray:
        order = (np.random.default_rng([self.cfg.seed, self.epoch]).permutation(len(self.store))
                 if self.shuffle else np.arange(len(self.store)))
        return order[self.rank::self.world]

    def _next_doc(self) -> tuple[list[int], str]:
        if self.cursor >= len(self._order):
            self.epoch, self.cursor = self.epoch + 1, 0
            self._order = self._epoch_order()
        i = int(self._order[self.cursor])
        self.cursor += 1
        return self.store.tokens(i), self.store.text(i) if self.packer.fim_rate > 0 else ""

    def next_batch(self) -> dict[str, torch.Tensor]:
        ids, pos, labels = [], [], []
        for _ in range(self.cfg.micro_batch_size):
            window = self.packer.next_window()
            p, lab = positions_and_labels(window.tokens, window.segment_starts)
            ids.append(window.tokens)
            pos.append(p)
            labels.append(lab)
        return {"input_ids": torch.tensor(ids), "position_ids": torch.tensor(pos), "labels": torch.tensor(labels)}

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "cursor": self.cursor, "packer": self.packer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.cursor = state["epoch"], state["cursor"]
        self._order = self._epoch_order()
        self.packer.load_state_dict(state["packer"])
