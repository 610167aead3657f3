"""The composite reward from the design, as a pure function of what the sandbox observed.

Default weights: compile failure -1; compiles +1; no warnings in the completion +0.5; tests +5 x
(passed/total); a `/* REASONING: ... */` block of at least `reasoning_min_words` words +0.5. Every weight is
configurable and each component is reported on its own. With `sanitize` on, every run is compiled with
AddressSanitizer + UBSan (sandbox Job.sanitize) and a finding (heap overflow, use-after-free, signed overflow,
null dereference...) adds the `sanitizer` component (default -1): the finding also ends the run, so the tests
after it fail too, and a completion that passed its tests only by luck of undefined behaviour no longer earns
the full reward. `bonus_requires_a_pass` pays the compile/warning
bonus only when a test passes (so "compiles but does nothing" is not rewarded).

The bonuses cannot be farmed: a completion that can change which warnings are reported (a diagnostic
`#pragma`/`_Pragma`, `system_header`, a `#line` directive or line marker, or token pasting that could build
one, in any spelling: splices, comments, digraphs, trigraphs) forfeits the warnings bonus, and the reasoning bonus is paid only together with the compile bonus.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field

_REASONING = re.compile(r"/\*\s*REASONING:(.*?)\*/", re.S)
# Anything in the completion that can silence or relocate a warning, matched after line splices and comments
# are removed (as the preprocessor does). `##`/`%:%:` are included because pasting can assemble `_Pragma`;
# "pragma" anywhere (any case) covers `#pragma`, `_Pragma` and `__pragma`; `%:` and `??=` spell `#`.
_SPLICE = re.compile(r"(?:\\|\?\?/)[ \t]*\r?\n")
_COMMENT = re.compile(r"/\*.*?\*/|//[^\n]*", re.S)
_SILENCERS = re.compile(r"pragma|##|%:|\?\?=|^[ \t]*#[ \t]*(?:line\b|\d)|system_header", re.I | re.M)
_WARNING = re.compile(r"^(?:/work/src/)?([\w.+-]+):(\d+):\d+: warning:", re.M)


class RewardConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    compile_fail: float = -1.0
    compile_ok: float = 1.0
    no_warnings: float = 0.5
    tests: float = Field(default=5.0, description="times the fraction of tests passed")
    reasoning: float = 0.5
    reasoning_min_words: int = Field(default=8, ge=0, description="words a REASONING block needs to count")
    bonus_requires_a_pass: bool = False
    warning_flags: tuple[str, ...] = ("-Wall", "-Wextra")
    sanitize: bool = Field(default=False, description="compile and run tests under AddressSanitizer + UBSan "
                           "(slower: see docs/benchmarks.md); a finding fails the run and adds `sanitizer`")
    sanitizer: float = Field(default=-1.0, description="added when a sanitizer reports a finding (sanitize only)")


def has_reasoning(completion: str, min_words: int = 8) -> bool:
    """A `/* REASONING: ... */` block holding at least `min_words` words (the design's length heuristic)."""
    return any(len(m.group(1).split()) >= max(min_words, 1) for m in _REASONING.finditer(completion))


def silences_warnings(completion: str) -> bool:
    """Could the completion hide its own warnings? Then it forfeits the warnings bonus."""
    spliced = _SPLICE.sub("", completion)
    # With comments removed (`#/**/line`), and as written (a "//" inside a string must not hide the rest).
    return any(_SILENCERS.search(text) for text in (_COMMENT.sub(" ", spliced), spliced))


def count_warnings(compile_output: str, file: str, first_line: int = 1) -> int:
    """Warnings located in `file` at or after `first_line` (the completion, not the prompt or tests)."""
    return sum(1 for f, line in _WARNING.findall(compile_output) if f == file and int(line) >= first_line)


def reward_components(compiled: bool, warnings: int, tests_passed: int, tests_total: int, reasoning: bool,
                      cfg: RewardConfig, silenced: bool = False, sanitizer_finding: bool = False) -> dict[str, float]:
    """Each component's contribution; the reward is their sum. `silenced`: the completion could hide
    warnings (see `silences_warnings`), so it gets no warnings bonus. `sanitizer` is reported only when
    `cfg.sanitize` is on."""
    sanitizer = {"sanitizer": cfg.sanitizer if sanitizer_finding and compiled else 0.0} if cfg.sanitize else {}
    if not compiled:
        return {"compile": cfg.compile_fail, "warnings": 0.0, "tests": 0.0, "reasoning": 0.0, **sanitizer}
    fraction = tests_passed / tests_total if tests_total else 0.0
    bonus = not cfg.bonus_requires_a_pass or tests_passed > 0 or tests_total == 0
    return {
        "compile": cfg.compile_ok if bonus else 0.0,
        "warnings": cfg.no_warnings if bonus and warnings == 0 and not silenced else 0.0,
        "tests": cfg.tests * fraction,
        "reasoning": cfg.reasoning if bonus and reasoning else 0.0,
        **sanitizer,
    }
