"""The composite reward from the design, as a pure function of what the sandbox observed.

Default weights: compile failure -1; compiles +1; no warnings in the completion +0.5; tests +5 x
(passed/total); a `/* REASONING: ... */` block +0.5. Every weight is configurable and each component is
reported on its own. `bonus_requires_a_pass` pays the compile/warning bonus only when a test passes
(so "compiles but does nothing" is not rewarded).
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field

_REASONING = re.compile(r"/\*\s*REASONING:.*?\*/", re.S)
_WARNING = re.compile(r"^(?:/work/src/)?([\w.+-]+):(\d+):\d+: warning:", re.M)


class RewardConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    compile_fail: float = -1.0
    compile_ok: float = 1.0
    no_warnings: float = 0.5
    tests: float = Field(default=5.0, description="times the fraction of tests passed")
    reasoning: float = 0.5
    bonus_requires_a_pass: bool = False
    warning_flags: tuple[str, ...] = ("-Wall", "-Wextra")


def has_reasoning(completion: str) -> bool:
    return _REASONING.search(completion) is not None


def count_warnings(compile_output: str, file: str, first_line: int = 1) -> int:
    """Warnings located in `file` at or after `first_line` (the completion, not the prompt or tests)."""
    return sum(1 for f, line in _WARNING.findall(compile_output) if f == file and int(line) >= first_line)


def reward_components(compiled: bool, warnings: int, tests_passed: int, tests_total: int, reasoning: bool,
                      cfg: RewardConfig) -> dict[str, float]:
    """Each component's contribution; the reward is their sum."""
    if not compiled:
        return {"compile": cfg.compile_fail, "warnings": 0.0, "tests": 0.0,
                "reasoning": cfg.reasoning if reasoning else 0.0}
    fraction = tests_passed / tests_total if tests_total else 0.0
    bonus = not cfg.bonus_requires_a_pass or tests_passed > 0 or tests_total == 0
    return {
        "compile": cfg.compile_ok if bonus else 0.0,
        "warnings": cfg.no_warnings if bonus and warnings == 0 else 0.0,
        "tests": cfg.tests * fraction,
        "reasoning": cfg.reasoning if reasoning else 0.0,
    }
