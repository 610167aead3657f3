"""FIM and packing against hand-built examples (one character = one token, so every window can be read)."""

from __future__ import annotations

import random

import pytest

from pretrain.fim import IGNORE, FimSpecials, Packer, fim_sequence, fim_split, positions_and_labels

SP = FimSpecials(eos=0, prefix=1, middle=2, suffix=3)
NAMES = {0: "<E>", 1: "<P>", 2: "<M>", 3: "<S>"}


def encode(text: str) -> list[int]:
    return [ord(c) for c in text]


def render(tokens: list[int]) -> str:
    return "".join(NAMES.get(t, chr(t)) for t in tokens)


def docs_source(texts: list[str]):
    it = iter(texts * 1000)
    return lambda: (encode(t := next(it)), t)


def test_fim_split_is_a_partition_at_character_level():
    rng = random.Random(3)
    for _ in range(100):
        text = "int f(int x) {\n  return x * 2;\n}\n"
        p, m, s = fim_split(text, rng)
        assert p + m + s == text


def test_psm_and_spm_layouts_by_hand():
    assert render(fim_sequence(encode("ab"), encode("cd"), encode("ef"), SP, spm=False)) == "<P>ab<S>ef<M>cd<E>"
    assert render(fim_sequence(encode("ab"), encode("cd"), encode("ef"), SP, spm=True)) == "<P><S>ef<M>abcd<E>"


def test_positions_restart_per_segment_and_labels_stay_inside():
    positions, labels = positions_and_labels([10, 11, 12, 13, 14, 15], [0, 2])
    assert positions == [0, 1, 0, 1, 2, 3]
    assert labels == [11, IGNORE, 13, 14, 15, IGNORE]


def test_plain_packing_has_no_padding_and_no_cropping():
    texts = ["abc", "defghij", "kl", "mnopqrstu"]
    packer = Packer(5, docs_source(texts), encode, SP, fim_rate=0.0)
    windows = [packer.next_window() for _ in range(5)]
    stream = "".join(render(w.tokens) for w in windows)
    assert all(len(w.tokens) == 5 for w in windows)
    assert stream == "abc<E>defghij<E>kl<E>mnopqrstu<E>"  # 25 tokens, every one used
    # a document cut at the edge continues as a fresh segment at the start of the next window
    assert [render(w.tokens) for w in windows[:3]] == ["abc<E>d", "efghi", "j<E>kl<E>"]
    assert [w.segment_starts for w in windows[:3]] == [[0, 4], [0], [0, 2]]


def _segments(window):
    bounds = [*window.segment_starts, len(window.tokens)]
    return [window.tokens[a:b] for a, b in zip(bounds, bounds[1:])]


def test_fim_documents_are_whole_inside_a_window_and_end_with_eos():
    texts = [f"line {i}\n" * (1 + i % 4) for i in range(12)]
    packer = Packer(40, docs_source(texts), encode, SP, fim_rate=0.5, spm_rate=0.5, seed=1)
    seen_psm = seen_spm = 0
    for _ in range(200):
        window = packer.next_window()
        assert len(window.tokens) == 40
        for seg in _segments(window):
            if seg[0] != SP.prefix:
                assert SP.prefix not in seg and SP.middle not in seg
                continue
            assert seg[-1] == SP.eos and seg.count(SP.middle) == 1 and seg.count(SP.suffix) == 1
            if seg[1] == SP.suffix:  # SPM: <P><S> suffix <M> prefix+middle <E>
                seen_spm += 1
                cut = seg.index(SP.middle)
                suffix, prefix_middle = seg[2:cut], seg[cut + 1:-1]
                assert render(prefix_middle + suffix) in texts
            else:  # PSM: <P> prefix <S> suffix <M> middle <E>
                seen_psm += 1
                s, m = seg.index(SP.suffix), seg.index(SP.middle)
                assert render(seg[1:s] + seg[m + 1:-1] + seg[s + 1:m]) in texts
    assert seen_psm > 20 and seen_spm > 20
    share = packer.stats.fim_docs / packer.stats.docs
    assert 0.35 < share < 0.6, share


def test_a_document_longer_than_the_space_left_is_never_fim():
    texts = ["x" * 26]  # FIM form: 26 + 4 tokens, fits only where at least 30 tokens are left
    packer = Packer(32, docs_source(texts), encode, SP, fim_rate=1.0, seed=0)
    for _ in range(50):
        window = packer.next_window()
        for seg in _segments(window):
            if seg[0] == SP.prefix:
                assert len(seg) == 26 + 4  # a whole FIM document, never cut
    assert packer.stats.fim_docs > 0


def test_state_dict_resumes_exactly():
    texts = [f"doc {i} " * (i % 5 + 1) for i in range(30)]
    a = Packer(24, docs_source(texts), encode, SP, fim_rate=0.5, seed=7)
    for _ in range(13):
        a.next_window()
    state = a.state_dict()
    expected = [a.next_window().tokens for _ in range(20)]
    # a fresh packer whose document source is at the same position (the loader restores that) + the state
    b = Packer(24, _skip(texts, state["stats"]["docs"]), encode, SP, fim_rate=0.5, seed=123)
    b.load_state_dict(state)
    assert [b.next_window().tokens for _ in range(20)] == expected


def _skip(texts, n):
    src = docs_source(texts)
    for _ in range(n):
        src()
    return src


def test_fim_needs_sentinels():
    with pytest.raises(ValueError, match="FIM"):
        Packer(8, docs_source(["a"]), encode, None, fim_rate=0.5)
