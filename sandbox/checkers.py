"""Output checkers: compare a program's stdout with the expected output, on the host, never in the jail.

Each checker is a pure function `(actual, expected) -> bool`, looked up by name in CHECKERS.
"""

from __future__ import annotations

import math
from collections.abc import Callable


def exact(actual: str, expected: str) -> bool:
    """Byte-for-byte equal, except that a single trailing newline is optional on both sides."""
    return actual.removesuffix("\n") == expected.removesuffix("\n")


def tokens(actual: str, expected: str) -> bool:
    """Equal as whitespace-separated token sequences (the usual competitive-programming check)."""
    return actual.split() == expected.split()


def _parse_float(token: str) -> float | None:
    try:
        return float(token)
    except ValueError:
        return None


def floats_close(actual: str, expected: str, abs_tol: float = 1e-6, rel_tol: float = 1e-6) -> bool:
    """Token-wise: numeric tokens equal within abs_tol or rel_tol, other tokens exactly. NaN never equals."""
    got, want = actual.split(), expected.split()
    if len(got) != len(want):
        return False
    for g, w in zip(got, want):
        gf, wf = _parse_float(g), _parse_float(w)
        if wf is None or gf is None:
            if g != w:
                return False
            continue
        if math.isnan(gf) or math.isnan(wf):
            return False
        if math.isinf(gf) or math.isinf(wf):
            if gf != wf:
                return False
            continue
        if not math.isclose(gf, wf, rel_tol=rel_tol, abs_tol=abs_tol):
            return False
    return True


CHECKERS: dict[str, Callable[[str, str], bool]] = {
    "exact": exact,
    "tokens": tokens,
    "float": floats_close,
}


def check(name: str, actual: str, expected: str, abs_tol: float = 1e-6, rel_tol: float = 1e-6) -> bool:
    try:
        checker = CHECKERS[name]
    except KeyError:
        raise ValueError(f"unknown checker {name!r}; choose one of {sorted(CHECKERS)}") from None
    if checker is floats_close:
        return floats_close(actual, expected, abs_tol=abs_tol, rel_tol=rel_tol)
    return checker(actual, expected)
