"""The C++ byte-level BPE: special tokens, lossless round trips, byte accounting and the C++-aware pre-split.

One small tokenizer is trained once (about a second) on a handful of C++ snippets; `cpp_tokenizer()` is shared
with the shard/loader tests. Byte-level pieces print bytes as GPT-2's stand-ins: " " is "Ġ", "\n" is "Ċ".
"""

from __future__ import annotations

from functools import lru_cache

import pytest

from pretrain.tokenizer import (EOS, FIM_MIDDLE, FIM_PREFIX, FIM_SUFFIX, fim_ids, token_byte_lengths,
                                tokens_per_byte, train_tokenizer)

CPP_TEXTS = [
    "#include <vector>\n\nint main() {\n\tstd::vector<int> v{1, 2, 3};\n\tfor (auto& x : v) x <<= 1;\n"
    "\treturn 0;\n}\n",
    "struct Node {\n    Node* next = nullptr;\n    int value = 12345;\n};\n\n"
    "int sum(Node* n) {\n    int s = 0;\n"
    "    while (n) { s += n->value; n = n->next; }\n    return s;\n}\n",
    "// ü 中文 comment\nnamespace a::b {\nconstexpr double pi = 3.14159;\n}\n",
    "template <typename T>\nT max_of(const T& a, const T& b) {\n  return a < b ? b : a;\n}\n",
    "bool ok(int x) { return x >= 0 && x != 7 || x == -1; }\n",
] * 3

ROUND_TRIP = [
    "int f(int x) {\n\tif (x > 0) {\n\t\treturn x * 2;\n\t}\n\treturn -x;\n}\n",
    "class A {\n  public:\n    A() = default;\n    ~A() { delete p_; }\n};\n",
    '// Grüße, 中文, ∑ and 🙂\nconst char* s = "ü中";\n',
    "   leading spaces\n\n\n  \t mixed \t whitespace  \n",
]


@lru_cache(maxsize=1)
def cpp_tokenizer():
    return train_tokenizer(CPP_TEXTS, vocab_size=400)


@pytest.fixture(scope="module")
def tok():
    return cpp_tokenizer()


def encode(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def test_vocab_fits_the_requested_size(tok):
    assert 256 + 4 < len(tok) <= 400


def test_eos_is_pad_and_fim_ids_name_the_four_special_tokens(tok):
    ids = fim_ids(tok)
    by_name = {"eos": EOS, "prefix": FIM_PREFIX, "middle": FIM_MIDDLE, "suffix": FIM_SUFFIX}
    assert ids == {name: tok.convert_tokens_to_ids(text) for name, text in by_name.items()}
    assert tok.eos_token_id == tok.pad_token_id == ids["eos"]
    assert len(set(ids.values())) == 4
    assert set(tok.all_special_ids) == set(ids.values())


@pytest.mark.parametrize("name", ["eos", "prefix", "middle", "suffix"])
def test_each_special_string_encodes_to_its_one_id(tok, name):
    text = {"eos": EOS, "prefix": FIM_PREFIX, "middle": FIM_MIDDLE, "suffix": FIM_SUFFIX}[name]
    assert encode(tok, text) == [fim_ids(tok)[name]]


def test_a_sentinel_inside_code_is_one_token_and_splits_nothing_else(tok):
    before, after = "int x;", "return x;"
    ids = encode(tok, before + FIM_MIDDLE + after)
    assert ids == encode(tok, before) + [fim_ids(tok)["middle"]] + encode(tok, after)


@pytest.mark.parametrize("text", ROUND_TRIP)
def test_decode_inverts_encode(tok, text):
    assert tok.decode(encode(tok, text)) == text


@pytest.mark.parametrize("text", ROUND_TRIP)
def test_token_byte_lengths_sum_to_the_utf8_length(tok, text):
    lengths = token_byte_lengths(tok)
    assert int(lengths[encode(tok, text)].sum()) == len(text.encode("utf-8"))


def test_token_byte_lengths_by_hand(tok):
    lengths = token_byte_lengths(tok)
    assert len(lengths) == len(tok)
    assert [int(lengths[i]) for i in fim_ids(tok).values()] == [0, 0, 0, 0]  # specials stand for no bytes
    assert int(lengths[tok.convert_tokens_to_ids("Ġ")]) == 1  # " "
    assert int(lengths[tok.convert_tokens_to_ids("ĊĠĠĠĠ")]) == 5  # "\n    ", learnt from the corpus
    assert all(lengths[i] >= 1 for i in range(len(tok)) if i not in tok.all_special_ids)


def _pieces(tok, text: str) -> list[str]:
    return [p for p, _ in tok.backend_tokenizer.pre_tokenizer.pre_tokenize_str(text)]


def test_pretokenizer_keeps_operators_whole_and_apart_from_identifiers(tok):
    assert _pieces(tok, "a->b::c <<= 12345;") == ["a", "->", "b", "::", "c", "Ġ<<=", "Ġ", "123", "45", ";"]


def test_pretokenizer_joins_newline_with_the_next_indentation(tok):
    assert _pieces(tok, "{\n    return x;\n}") == ["{", "ĊĠĠĠĠ", "return", "Ġx", ";", "Ċ", "}"]
    assert _pieces(tok, "{\n\t\tx++;") == ["{", "Ċĉĉ", "x", "++", ";"]


def test_identifiers_never_share_a_piece_with_an_operator(tok):
    code = "p->next=q&&r||s::t<=u>>=v!=w"
    pieces = _pieces(tok, code)
    assert pieces == ["p", "->", "next", "=", "q", "&&", "r", "||", "s", "::", "t", "<=", "u", ">>=", "v",
                      "!=", "w"]
    assert "".join(pieces) == code


def test_no_token_merges_across_a_pretokenizer_boundary(tok):
    text = CPP_TEXTS[1]
    pieces = _pieces(tok, text)
    tokens = tok.convert_ids_to_tokens(encode(tok, text))
    # greedily re-group the tokens: every piece must be exactly a run of whole tokens
    i = 0
    for piece in pieces:
        joined = ""
        while joined != piece:
            joined += tokens[i]
            i += 1
            assert len(joined) <= len(piece), f"token crosses the boundary of piece {piece!r}"
    assert i == len(tokens)


def test_tokens_per_byte_is_tokens_over_bytes(tok):
    texts = ["int x;", "ü"]  # 6 + 2 UTF-8 bytes
    count = len(encode(tok, "int x;")) + len(encode(tok, "ü"))
    assert tokens_per_byte(tok, texts) == count / 8
    assert 0 < tokens_per_byte(tok, texts) <= 1  # a byte-level token never stands for less than one byte


def test_vocab_smaller_than_bytes_plus_specials_is_rejected():
    with pytest.raises(ValueError, match="vocab_size=260"):
        train_tokenizer(["int x;"], vocab_size=260)


def test_fim_ids_names_the_missing_sentinel():
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.train_from_iterator(["int main() {}"], trainers.BpeTrainer(
        vocab_size=300, special_tokens=[EOS], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    plain = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token=EOS)
    with pytest.raises(ValueError, match=r"<\|fim_prefix\|>"):
        fim_ids(plain)


def test_fim_ids_rejects_a_sentinel_that_maps_to_unk():
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.WordLevel({"[UNK]": 0, EOS: 1, FIM_PREFIX: 2, FIM_MIDDLE: 3}, unk_token="[UNK]"))
    partial = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token=EOS, unk_token="[UNK]")
    with pytest.raises(ValueError, match=r"<\|fim_suffix\|>"):
        fim_ids(partial)
