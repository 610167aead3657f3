"""The schema of our own task format (docs/tasks.md): every field typed, unknown fields refused.

A task file is user input. A misspelled field (`chekcer: float`) that were silently ignored would fall back
to a default and fail the correct reference, so every row is validated here when the file loads, and an
error names the field and, for an unknown one, the field it probably meant.
"""

from __future__ import annotations

import difflib
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sandbox.types import TASK_MAX_MEMORY_MB, TASK_MAX_TIME_S


class CaseSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    input: str
    output: str


class NativeTaskSpec(BaseModel):
    """One row of our format. Defaults are those of rewards.types.Task."""

    model_config = ConfigDict(extra="forbid", strict=True)
    task_id: str = Field(min_length=1)
    prompt: str = Field(min_length=1)
    kind: Literal["function", "stdio", "compile", "repair"] | None = None  # default: stdio with `cases`, else function
    tier: int | None = Field(default=None, ge=0)
    entry_point: str | None = None
    reference: str | None = None
    tests: str | None = None
    cases: list[CaseSpec] | None = None
    checker: Literal["exact", "tokens", "float"] = "tokens"
    abs_tol: float = Field(default=1e-6, ge=0)
    rel_tol: float = Field(default=1e-6, ge=0)
    stop_tokens: list[str] | None = None
    flags: list[str] | None = None
    link_flags: list[str] | None = None
    time_limit_s: float | None = Field(default=None, gt=0, le=TASK_MAX_TIME_S,
                                       description="CPU seconds per test run (wall clock: twice that)")
    memory_mb: int | None = Field(default=None, gt=0, le=TASK_MAX_MEMORY_MB,
                                  description="address space per test run")
    source: str = "native"
    base_prompt: str | None = Field(default=None, description="kind repair with tests: the original prompt")
    sanitize: bool = Field(default=False, description="always scored under AddressSanitizer + UBSan")

    @classmethod
    def parse(cls, row: dict) -> NativeTaskSpec:
        """Validate one row; ValueError with one line per problem, each naming its field. Strict types (no
        `"5"` for 5), except that float fields take integers (`abs_tol: 0`)."""
        row = {k: float(v) if k in _FLOATS and isinstance(v, int) and not isinstance(v, bool) else v
               for k, v in row.items()}
        try:
            return cls.model_validate(row)
        except ValidationError as exc:
            raise ValueError("; ".join(_explain(err) for err in exc.errors())) from None


_FLOATS = {"abs_tol", "rel_tol", "time_limit_s"}


def _explain(err: dict) -> str:
    loc = err["loc"]
    field = "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p)) for i, p in enumerate(loc))
    if err["type"] == "extra_forbidden":
        known = (CaseSpec if len(loc) > 1 else NativeTaskSpec).model_fields
        guess = difflib.get_close_matches(str(loc[-1]), list(known), n=1, cutoff=0.6)
        hint = f" (did you mean {guess[0]!r}?)" if guess else f" (known fields: {', '.join(known)})"
        return f"unknown field {field!r}{hint}"
    if err["type"] == "missing":
        return f"field {field!r} is missing"
    return f"field {field!r}: {err['msg']}, got {err.get('input')!r}"[:300]
