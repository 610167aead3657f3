"""Completion extraction: raw continuations cut at stop strings, or fenced ```cpp blocks from chat output."""

from __future__ import annotations

import re

_FENCE = re.compile(r"```[ \t]*(?:c\+\+|cpp|cxx|cc|c)?[ \t]*\n(.*?)(?:```|\Z)", re.S | re.I)


def cut_at_stop(text: str, stop: tuple[str, ...] | list[str]) -> str:
    """Text up to (not including) the earliest stop string."""
    cut = len(text)
    for s in stop:
        if s:
            i = text.find(s)
            if 0 <= i < cut:
                cut = i
    return text[:cut]


def fenced_block(text: str) -> str | None:
    """The last fenced code block (chat models usually put the final answer last), or None."""
    blocks = _FENCE.findall(text)
    return blocks[-1] if blocks else None


def extract(text: str, mode: str = "raw", stop: tuple[str, ...] = ()) -> str:
    """mode="raw": continuation of the prompt, cut at stop strings. mode="chat": the last ```cpp block,
    falling back to the whole text when there is none."""
    if mode == "raw":
        return cut_at_stop(text, stop)
    if mode == "chat":
        block = fenced_block(text)
        return block if block is not None else text
    raise ValueError(f"unknown extraction mode {mode!r} (raw or chat)")


def defines_function(code: str, name: str) -> bool:
    """Does `code` contain a definition of `name` (a full function, as chat answers usually give)?"""
    return bool(name) and re.search(rf"\b{re.escape(name)}\s*\([^;{{}}]*\)\s*(const\s*)?\{{", code) is not None
