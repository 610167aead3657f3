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


def close_function(text: str) -> str:
    """HumanEval-X's official C++ post-processing, reproduced: its generator stops as soon as the text holds
    one more `}` than `{` (counted naively, as it does, strings and comments included), and its cleanup keeps
    everything up to that brace. A text that never closes the function but whose own braces balance was cut
    at a stop string such as "\n}\n" that took the function's brace with it: the brace is put back (never
    to an empty text, which stays a compile error as it is officially, nor to one with a line starting with
    `}`, which closed the function under a brace the naive count missed, e.g. in '{'). Any other text is
    kept up to its last `}`, as the official cleanup does."""
    depth = 0
    for i, ch in enumerate(text):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth < 0:
                return text[: i + 1]
    if depth == 0 and text.strip() and not re.search(r"^\}", text, re.M):
        return text.rstrip("\r\n") + "\n}"
    last = text.rfind("}")
    return text[: last + 1] if last >= 0 else text


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


def completion_of(text: str, mode: str, stop: tuple[str, ...] = (), finish: str = "stop") -> str:
    """The completion a task scores: chat answers as `extract` takes them; raw continuations cut by the
    task's own rule (`finish`), so every format ends where its official harness ends it."""
    if mode == "raw" and finish == "close-function":
        return close_function(text)
    return extract(text, mode, stop)


def function_body_start(code: str, name: str) -> int | None:
    """Index just past the `{` that opens the first definition of `name` in `code`, or None."""
    match = re.search(rf"\b{re.escape(name)}\s*\([^;{{}}]*\)\s*(const\s*)?\{{", code) if name else None
    return match.end() if match else None


def defines_function(code: str, name: str) -> bool:
    """Does `code` contain a definition of `name` (a full function, as chat answers usually give)?"""
    return function_body_start(code, name) is not None
