"""Shards on disk and the packed loader, on a five-document corpus (one document long enough to be cut).

Shards are built with `max_doc_tokens=16` and `shard_tokens=40`, so the long document becomes several pieces
and the split spans several shards. The loader is checked by reading its batches back: with FIM off, the
row-major stream of input ids split at EOS is exactly the documents in the order the loader walks them.
"""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from pretrain.data import DocStore, LoaderConfigView, PackedLoader, build_shards
from pretrain.fim import IGNORE, FimSpecials
from pretrain.tokenizer import fim_ids, token_byte_lengths
from tests.unit.pretrain.test_tokenizer import CPP_TEXTS, cpp_tokenizer

LONG = CPP_TEXTS[1] + CPP_TEXTS[3]  # about 100 tokens: 7 pieces of <= 16
DOCS = [
    "int a = 1;\n",
    "void f() {}\n",
    LONG,
    "struct S { int x; };\n",
    "// ü 中\nint y;\n",
]
MAX_DOC, SHARD = 16, 40


@pytest.fixture(scope="module")
def tok():
    return cpp_tokenizer()


@pytest.fixture(scope="module")
def doc_ids(tok):
    return [tok(t, add_special_tokens=False)["input_ids"] for t in DOCS]


@pytest.fixture(scope="module")
def shards(tmp_path_factory, tok):
    root = tmp_path_factory.mktemp("data")
    (root / "train.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in DOCS))
    meta = build_shards(root / "train.jsonl", tok, root / "train", max_doc_tokens=MAX_DOC, shard_tokens=SHARD)
    return root / "train", meta


@pytest.fixture(scope="module")
def store(shards):
    return DocStore(shards[0])


@pytest.fixture(scope="module")
def sp(tok):
    return FimSpecials(**fim_ids(tok))


def _pieces_per_doc(doc_ids) -> list[int]:
    return [math.ceil(len(ids) / MAX_DOC) for ids in doc_ids]


def _piece_range(doc_ids, d: int) -> range:
    """Store indices of document `d`'s pieces (pieces are stored in corpus order)."""
    counts = _pieces_per_doc(doc_ids)
    start = sum(counts[:d])
    return range(start, start + counts[d])


# --- shards -------------------------------------------------------------------------------------------------


def test_meta_counts(shards, doc_ids):
    _, meta = shards
    assert len(doc_ids[2]) > 4 * MAX_DOC  # the long document really is long
    assert meta["num_docs"] == sum(_pieces_per_doc(doc_ids))
    assert meta["num_tokens"] == sum(len(ids) for ids in doc_ids)
    assert meta["num_bytes"] == sum(len(t.encode("utf-8")) for t in DOCS)
    assert meta["source_docs"] == len(DOCS)
    assert meta["max_doc_tokens"] == MAX_DOC and meta["dtype"] == "uint16"


def test_shards_split_the_documents_between_them(shards):
    split_dir, meta = shards
    assert len(meta["shards"]) > 1
    assert sum(s["docs"] for s in meta["shards"]) == meta["num_docs"]
    assert sum(s["tokens"] for s in meta["shards"]) == meta["num_tokens"]
    assert all(s["tokens"] < SHARD + MAX_DOC for s in meta["shards"])  # a shard closes once it reaches SHARD
    assert (split_dir / "meta.json").exists() and not split_dir.with_name("train.partial").exists()


def test_long_document_is_cut_into_pieces_of_at_most_max_doc_tokens(store, doc_ids):
    pieces = [store.tokens(i) for i in _piece_range(doc_ids, 2)]
    assert [len(p) for p in pieces[:-1]] == [MAX_DOC] * (len(pieces) - 1)
    assert 1 <= len(pieces[-1]) <= MAX_DOC
    assert [t for p in pieces for t in p] == doc_ids[2]


def test_piece_texts_concatenate_to_the_document(store, doc_ids):
    for d, text in enumerate(DOCS):
        assert "".join(store.text(i) for i in _piece_range(doc_ids, d)) == text


def test_docstore_random_access_matches_the_corpus(store, tok, doc_ids):
    expected = [(ids[lo:lo + MAX_DOC], d)
                for d, ids in enumerate(doc_ids) for lo in range(0, len(ids), MAX_DOC)]
    assert len(store) == len(expected)
    for i in [7, 0, len(store) - 1, 3, 2, 5]:  # out of order, across shards
        tokens, d = expected[i]
        assert store.tokens(i) == tokens
        assert store.text(i) == tok.decode(tokens) and store.text(i) in DOCS[d]
    assert [store.text(i) for i in _piece_range(doc_ids, 4)] == [DOCS[4]]  # non-ASCII text survives the bytes


def test_each_piece_text_has_the_bytes_of_its_tokens(store, tok):
    lengths = token_byte_lengths(tok)
    for i in range(len(store)):
        assert len(store.text(i).encode("utf-8")) == int(lengths[store.tokens(i)].sum())


def test_a_cut_inside_a_multibyte_character_keeps_text_and_tokens_aligned(tmp_path, tok):
    text = "ab\U0001F642cd"  # the emoji is four byte tokens here, so a cut every 2 tokens lands inside it
    (tmp_path / "c.jsonl").write_text(json.dumps({"text": text}) + "\n")
    build_shards(tmp_path / "c.jsonl", tok, tmp_path / "out", max_doc_tokens=2, shard_tokens=1000)
    store = DocStore(tmp_path / "out")
    lengths = token_byte_lengths(tok)
    assert [len(store.text(i).encode()) for i in range(len(store))] == [
        int(lengths[store.tokens(i)].sum()) for i in range(len(store))]


def test_missing_meta_names_the_directory(tmp_path):
    (tmp_path / "half").mkdir()
    with pytest.raises(ValueError, match="half.*meta.json"):
        DocStore(tmp_path / "half")


# --- loader -------------------------------------------------------------------------------------------------


def _loader(store, tok, sp, fim_rate=0.0, seed=0, rank=0, world_size=1, seq_len=32, micro_batch=2):
    cfg = LoaderConfigView(seq_len=seq_len, micro_batch_size=micro_batch, fim_rate=fim_rate, seed=seed)
    return PackedLoader(store, tok, cfg, sp, rank=rank, world_size=world_size)


def _stream_docs(loader, eos: int, count: int) -> list[tuple[int, ...]]:
    """The first `count` documents of the loader's output (FIM off): input ids row by row, split at EOS."""
    docs, current = [], []
    while len(docs) < count:
        for row in loader.next_batch()["input_ids"].tolist():
            for t in row:
                if t == eos:
                    docs.append(tuple(current))
                    current = []
                else:
                    current.append(t)
    return docs[:count]


def test_batch_shapes(store, tok, sp):
    batch = _loader(store, tok, sp, micro_batch=3, seq_len=24).next_batch()
    assert set(batch) == {"input_ids", "position_ids", "labels"}
    assert all(v.shape == (3, 24) and v.dtype == torch.int64 for v in batch.values())


def _segment_ends(position_ids: torch.Tensor) -> torch.Tensor:
    """True where the next position restarts at 0 (a new segment) or the row ends."""
    nxt = torch.cat([position_ids[:, 1:], torch.zeros_like(position_ids[:, :1])], dim=1)
    return nxt == 0


def test_labels_are_ignored_exactly_at_segment_ends(store, tok, sp):
    loader = _loader(store, tok, sp, fim_rate=0.5)
    for _ in range(6):
        b = loader.next_batch()
        ends = _segment_ends(b["position_ids"])
        assert torch.equal(b["labels"] == IGNORE, ends)
        assert torch.equal(b["labels"][:, :-1][~ends[:, :-1]], b["input_ids"][:, 1:][~ends[:, :-1]])


def test_positions_restart_at_each_document(store, tok, sp):
    loader = _loader(store, tok, sp, fim_rate=0.0)
    for _ in range(6):
        b = loader.next_batch()
        ids, pos = b["input_ids"], b["position_ids"]
        starts = torch.zeros_like(ids, dtype=torch.bool)
        starts[:, 0] = True
        starts[:, 1:] = ids[:, :-1] == sp.eos  # FIM off: a segment starts after every EOS
        assert torch.equal(pos == 0, starts)
        assert torch.equal(pos[:, 1:][~starts[:, 1:]], pos[:, :-1][~starts[:, 1:]] + 1)


def test_one_epoch_of_batches_is_every_document_in_the_loader_order(store, tok, sp):
    loader = _loader(store, tok, sp, fim_rate=0.0)
    order = [int(i) for i in loader._order]
    assert sorted(order) == list(range(len(store)))
    docs = _stream_docs(loader, sp.eos, len(store))
    assert docs == [tuple(store.tokens(i)) for i in order]


def test_two_ranks_read_disjoint_shares_of_an_epoch(store, tok, sp):
    everything = {tuple(store.tokens(i)) for i in range(len(store))}
    assert len(everything) == len(store)  # the pieces are distinguishable by their tokens
    n0, n1 = (len(store) + 1) // 2, len(store) // 2  # rank r takes every 2nd document from the r-th
    rank0 = _stream_docs(_loader(store, tok, sp, rank=0, world_size=2), sp.eos, n0)
    rank1 = _stream_docs(_loader(store, tok, sp, rank=1, world_size=2), sp.eos, n1)
    assert len(set(rank0)) == n0 and len(set(rank1)) == n1
    assert not set(rank0) & set(rank1)
    assert set(rank0) | set(rank1) == everything


def test_exact_resume_from_state_dict(store, tok, sp):
    a = _loader(store, tok, sp, fim_rate=0.5, seed=3)
    for _ in range(5):
        a.next_batch()
    state = copy.deepcopy(a.state_dict())
    expected = [a.next_batch() for _ in range(5)]  # crosses an epoch boundary: ~180 tokens per epoch

    fresh = _loader(store, tok, sp, fim_rate=0.5, seed=3).next_batch()
    assert not torch.equal(fresh["input_ids"], expected[0]["input_ids"])  # so resuming has work to do

    b = _loader(store, tok, sp, fim_rate=0.5, seed=3)
    b.load_state_dict(state)
    for want in expected:
        got = b.next_batch()
        for key in want:
            assert torch.equal(got[key], want[key]), key
    assert b.state_dict() == a.state_dict()


def test_data_seed_changes_the_order(store, tok, sp):
    n = len(store)
    assert _stream_docs(_loader(store, tok, sp, seed=0), sp.eos, n) != _stream_docs(
        _loader(store, tok, sp, seed=1), sp.eos, n)


def test_more_ranks_than_documents_is_rejected(store, tok, sp):
    with pytest.raises(ValueError, match="ranks"):
        _loader(store, tok, sp, rank=0, world_size=len(store) + 1)
