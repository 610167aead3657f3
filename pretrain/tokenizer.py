"""Byte-level BPE for C++: trained with `tokenizers` on the corpus, saved as a `transformers` tokenizer.

Pre-tokenisation is C++-aware (a regex split before the byte-level map): identifiers stay whole, numbers
split into groups of at most three digits, the common multi-character operators (`::`, `->`, `<<=`, `&&`,
...) are one piece, and a newline together with the next line's indentation is one piece, so merges learn
indentation levels instead of gluing code to whitespace. Special tokens: EOS (also used as padding, so a
padded position never predicts a real token), and the three fill-in-the-middle sentinels.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

EOS = "<|endoftext|>"
FIM_PREFIX = "<|fim_prefix|>"
FIM_MIDDLE = "<|fim_middle|>"
FIM_SUFFIX = "<|fim_suffix|>"
SPECIAL_TOKENS = [EOS, FIM_PREFIX, FIM_MIDDLE, FIM_SUFFIX]

# Order matters: the first alternative that matches at a position wins.
CPP_SPLIT = (
    r"\n[ \t]*"                                   # newline + the next line's indentation
    r"| ?[A-Za-z_][A-Za-z0-9_]*"                  # identifiers / keywords, with one leading space
    r"|[0-9]{1,3}"                                # numbers in groups of <= 3 digits
    r"| ?(?://|/\*|\*/|::|->\*?|\.\*|<<=|>>=|<=>|\+\+|--|&&|\|\||<<|>>|[-+*/%&|^!=<>]=)"  # multi-char operators
    r"| ?[^\sA-Za-z0-9_]"                         # any other single symbol, with one leading space
    r"| +|\t+|\s"                                 # remaining whitespace runs
)


def train_tokenizer(texts: Iterable[str], vocab_size: int):
    """Train the BPE on `texts`; returns a `PreTrainedTokenizerFast` (EOS = pad, FIM sentinels registered)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 256 + len(SPECIAL_TOKENS) + 1:
        raise ValueError(f"tokenizer.vocab_size={vocab_size}: must exceed the 256 byte symbols + specials")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(CPP_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS, pad_token=EOS, bos_token=None,
        additional_special_tokens=[FIM_PREFIX, FIM_MIDDLE, FIM_SUFFIX])


def fim_ids(tokenizer) -> dict[str, int]:
    """Ids of EOS and the FIM sentinels; ValueError if the tokenizer lacks any of them."""
    ids = {}
    for name, text in (("eos", EOS), ("prefix", FIM_PREFIX), ("middle", FIM_MIDDLE), ("suffix", FIM_SUFFIX)):
        tid = tokenizer.convert_tokens_to_ids(text)
        if tid is None or tid == tokenizer.unk_token_id:
            raise ValueError(f"tokenizer has no {text} token: FIM needs it (set data.fim_rate=0 or add it)")
        ids[name] = tid
    return ids


def token_byte_lengths(tokenizer) -> np.ndarray:
    """UTF-8 bytes each token id stands for; special tokens count zero (bits-per-byte's denominator)."""
    from tokenizers import pre_tokenizers

    byte_of = set(pre_tokenizers.ByteLevel.alphabet())  # one stand-in character per byte
    special = set(tokenizer.all_special_ids)
    lengths = np.zeros(len(tokenizer), dtype=np.int64)
    for token, tid in tokenizer.get_vocab().items():
        if tid in special:
            continue
        lengths[tid] = sum(1 for ch in token if ch in byte_of)
    return lengths


def tokens_per_byte(tokenizer, texts: list[str]) -> float:
    num_tokens = sum(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])
    return num_tokens / max(1, sum(len(t.encode()) for t in texts))


def read_texts(jsonl: Path, max_bytes: int | None = None) -> Iterator[str]:
    """Texts of a corpus split, stopping once `max_bytes` have been yielded (a cap on tokenizer training)."""
    seen = 0
    with open(jsonl) as fh:
        for line in fh:
            text = json.loads(line)["text"]
            yield text
            seen += len(text.encode())
            if max_bytes is not None and seen >= max_bytes:
                return


def build_tokenizer(corpus_dir: Path, out_dir: Path, vocab_size: int, max_train_bytes: int | None) -> dict:
    """Train on the corpus's train split, save to `out_dir`, report tokens/byte on its validation split."""
    tokenizer = train_tokenizer(read_texts(corpus_dir / "train.jsonl", max_train_bytes), vocab_size)
    val = list(read_texts(corpus_dir / "val.jsonl"))
    report = {"vocab_size": len(tokenizer), "tokens_per_byte": tokens_per_byte(tokenizer, val),
              "val_bytes": sum(len(t.encode()) for t in val), "references": _reference_tokens_per_byte(val)}
    tmp = out_dir.with_name(out_dir.name + ".partial")
    tokenizer.save_pretrained(tmp)
    (tmp / "tokenizer_report.json").write_text(json.dumps(report, indent=1))
    tmp.rename(out_dir)
    return report


def _reference_tokens_per_byte(val: list[str]) -> dict[str, float]:
    """Tokens/byte of reference tokenizers shipped in packages here (see pretrain.reference_tokenizers)."""
    try:
        from pretrain.reference_tokenizers import available_reference_tokenizers
        from pretrain.reference_tokenizers import tokens_per_byte as ref_tokens_per_byte
    except ImportError:
        return {}
    return {name: ref_tokens_per_byte(count, val) for name, count in available_reference_tokenizers().items()}
