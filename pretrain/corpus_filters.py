"""Pure helpers for the pretraining corpus builder (pretrain/corpus.py): normalisation, quality filters,
licence-header stripping, MinHash shingles and the by-file validation split. No I/O, no state."""

from __future__ import annotations

import hashlib
import re
from typing import Literal

# Markers of machine-written files; only looked for near the top, where generators put them.
GENERATED_MARKERS = re.compile(r"generated\s+by|do\s+not\s+edit|auto-?generated|@generated", re.IGNORECASE)
GENERATED_HEAD_LINES = 5
# Shingle tokens: identifiers/numbers as one token, every other non-space character on its own.
TOKEN = re.compile(r"\w+|[^\w\s]")
# Leading comments: one /* ... */ block, or a run of // lines (with blank lines around either).
_LEADING_BLOCK = re.compile(r"\s*/\*.*?\*/", re.DOTALL)
_LEADING_LINE_COMMENTS = re.compile(r"(?:[ \t]*//[^\n]*(?:\n|$)|[ \t]*\n)+")


def is_binary(data: bytes) -> bool:
    """True for content that is not text: a NUL byte anywhere, or not valid UTF-8."""
    if b"\0" in data:
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def normalize_text(text: str, tabs: Literal["keep", "spaces"] = "keep", tab_width: int = 4) -> str:
    """LF line endings, no trailing whitespace, tabs kept or expanded to `tab_width` columns, and exactly
    one trailing newline ("" for a file with no visible content)."""
    if tabs not in ("keep", "spaces"):
        raise ValueError(f"tabs must be 'keep' or 'spaces', got {tabs!r}")
    if tab_width < 1:
        raise ValueError(f"tab_width must be >= 1, got {tab_width}")
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if tabs == "spaces":
        # expandtabs is column-aware, so alignment after a tab survives the conversion.
        lines = [line.expandtabs(tab_width) for line in lines]
    body = "\n".join(line.rstrip() for line in lines).rstrip("\n")
    return body + "\n" if body.strip() else ""


def is_generated(text: str, head_lines: int = GENERATED_HEAD_LINES) -> bool:
    """True when one of the first `head_lines` lines carries a generator marker ("DO NOT EDIT", ...)."""
    head = "\n".join(text.split("\n", head_lines)[:head_lines])
    return GENERATED_MARKERS.search(head) is not None


def is_minified(text: str, max_line_length: int, max_mean_line_length: float) -> bool:
    """True when the longest line exceeds `max_line_length` or the mean line length exceeds
    `max_mean_line_length` (minified or data-blob files, useless for learning code)."""
    lines = text.rstrip("\n").split("\n")
    lengths = [len(line) for line in lines]
    return max(lengths) > max_line_length or sum(lengths) / len(lengths) > max_mean_line_length


def strip_leading_licence(text: str) -> str:
    """The text without its leading comments (licence headers, file banners), so that files sharing a long
    licence header are not mistaken for near-duplicates. An unterminated leading block yields ""."""
    rest = text
    while True:
        match = _LEADING_BLOCK.match(rest) or _LEADING_LINE_COMMENTS.match(rest)
        if match is None or match.end() == 0:
            break
        rest = rest[match.end():]
    if rest.lstrip().startswith("/*"):  # unterminated block comment: the whole rest is comment
        return ""
    return rest.lstrip()


def shingles(text: str, size: int) -> set[str]:
    """The set of `size`-token shingles of `text` (tokens per TOKEN); a text shorter than `size` tokens
    gives one shingle of all its tokens, an empty text the empty set."""
    if size < 1:
        raise ValueError(f"shingle size must be >= 1, got {size}")
    tokens = TOKEN.findall(text)
    if len(tokens) <= size:
        return {" ".join(tokens)} if tokens else set()
    return {" ".join(tokens[i:i + size]) for i in range(len(tokens) - size + 1)}


def split_score(key: str, seed: int = 0) -> float:
    """A deterministic pseudo-random number in [0, 1) for `key` (e.g. a content hash) under `seed`."""
    digest = hashlib.sha256(f"{seed}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_is_val(key: str, fraction: float, seed: int = 0) -> bool:
    """Whether the file keyed by `key` belongs to the held-out validation split (about `fraction` of keys)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"validation fraction must be in [0, 1], got {fraction}")
    return split_score(key, seed) < fraction
