"""Learning-rate schedules as pure functions of the (0-based) step: the trainer sets
`group["lr"] = group["base_lr"] * lr_multiplier(step, total_steps, ...)` before every optimizer step.

- `wsd` (warmup-stable-decay): linear warmup, constant 1.0, then a linear warmdown over the last
  `warmdown_frac` of the run to `final_frac` at the last step (Hägele et al. 2024, "Scaling Laws and
  Compute-Optimal Training Beyond Fixed Training Durations"; the nanochat / modded-nanogpt default).
- `cosine`: the same warmup, then a half cosine from 1.0 to `final_frac` at the last step.

Warmup lasts `max(1, round(warmup_frac * total_steps))` steps (none when `warmup_frac == 0`); the multiplier
at warmup step s is `(s + 1) / warmup_steps`, so the first step is already non-zero (a zero-lr step wastes a
batch). The result is `min(warmup ramp, decay curve)`, which keeps both ends exact even for tiny runs where
the two windows would touch: step `total_steps - 1` gets exactly `final_frac` (unless `wsd` has
`warmdown_frac == 0`, which means no decay at all).
"""

from __future__ import annotations

import math
from typing import Literal

__all__ = ["lr_multiplier", "warmup_steps", "warmdown_steps"]


def _check_frac(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")


def warmup_steps(total_steps: int, warmup_frac: float) -> int:
    """Number of warmup steps: 0 when `warmup_frac == 0`, else at least 1."""
    return 0 if warmup_frac == 0 else min(total_steps, max(1, round(warmup_frac * total_steps)))


def warmdown_steps(total_steps: int, warmdown_frac: float) -> int:
    """Number of steps after the plateau's last step (value 1.0) until the last step (value final_frac)."""
    return 0 if warmdown_frac == 0 else min(total_steps, max(1, round(warmdown_frac * total_steps)))


def lr_multiplier(
    step: int,
    total_steps: int,
    kind: Literal["wsd", "cosine"],
    warmup_frac: float = 0.02,
    warmdown_frac: float = 0.3,
    final_frac: float = 0.1,
) -> float:
    """The factor in [0, 1] to multiply each group's base learning rate by at 0-based `step`.

    `warmdown_frac` is ignored by `cosine` (it decays over everything after warmup). Raises ValueError, naming
    the argument, for a step outside [0, total_steps), a non-positive total, an unknown kind or a fraction
    outside [0, 1] (for `wsd` also `warmup_frac + warmdown_frac > 1`).
    """
    if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
        raise ValueError(f"total_steps must be a positive int, got {total_steps!r}")
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step < total_steps:
        raise ValueError(f"step must be an int in [0, total_steps={total_steps}), got {step!r}")
    if kind not in ("wsd", "cosine"):
        raise ValueError(f"kind must be 'wsd' or 'cosine', got {kind!r}")
    _check_frac("warmup_frac", warmup_frac)
    _check_frac("warmdown_frac", warmdown_frac)
    _check_frac("final_frac", final_frac)
    if kind == "wsd" and warmup_frac + warmdown_frac > 1.0:
        raise ValueError(f"warmup_frac + warmdown_frac must be <= 1 for wsd, "
                         f"got {warmup_frac} + {warmdown_frac}")

    n_warm = warmup_steps(total_steps, warmup_frac)
    ramp = 1.0 if n_warm == 0 else min(1.0, (step + 1) / n_warm)
    last = total_steps - 1
    if kind == "wsd":
        n_down = warmdown_steps(total_steps, warmdown_frac)
        if n_down == 0:
            return ramp
        start = last - n_down  # last step at 1.0; the decay is linear from here to `last`
        progress = min(1.0, max(0.0, (step - start) / n_down))
        decay = 1.0 - (1.0 - final_frac) * progress
    else:
        # The cosine starts at the last warmup step (value 1.0); clamped so a 1- or 2-step run still ends
        # exactly at final_frac.
        start = min(max(n_warm - 1, 0), last - 1)
        progress = min(1.0, max(0.0, (step - start) / (last - start)))
        decay = final_frac + (1.0 - final_frac) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if step == last:
        decay = final_frac  # exact, not 1 - (1 - f) * 1.0 or f + (1 - f) * 0.5 * (1 + cos(pi)) rounding
    return min(ramp, decay)
