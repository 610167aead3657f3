"""LR schedules: hand-computed values, shape properties (monotone warmup / decay, exact ends) and bad args."""

from __future__ import annotations

import math

import pytest

from pretrain.schedule import lr_multiplier


@pytest.mark.parametrize(("step", "expected"), [
    (0, 0.5),  # round(0.02 * 100) = 2 warmup steps: (0 + 1) / 2
    (1, 1.0),
    (50, 1.0),
    (69, 1.0),  # last plateau step: warmdown is the last 30 steps, 70..99
    (70, 1.0 - 0.9 * 1 / 30),  # 0.97
    (84, 1.0 - 0.9 * 15 / 30),  # 0.55, halfway down
    (98, 1.0 - 0.9 * 29 / 30),  # 0.13
    (99, 0.1),
])
def test_wsd_hand_values(step: int, expected: float) -> None:
    assert lr_multiplier(step, 100, "wsd") == pytest.approx(expected, abs=1e-12)


def test_last_step_is_exactly_final_frac() -> None:
    for kind in ("wsd", "cosine"):
        for total in (1, 2, 3, 7, 100, 12345):
            assert lr_multiplier(total - 1, total, kind, final_frac=0.1) == 0.1


@pytest.mark.parametrize(("step", "expected"), [
    (0, 0.5),
    (1, 1.0),  # the cosine starts at the last warmup step
    (50, 0.1 + 0.9 * 0.5),  # progress (50 - 1) / 98 = 0.5
    (25, 0.1 + 0.45 * (1 + math.cos(math.pi * 24 / 98))),
    (99, 0.1),
])
def test_cosine_hand_values(step: int, expected: float) -> None:
    assert lr_multiplier(step, 100, "cosine") == pytest.approx(expected, abs=1e-12)


def test_longer_warmup_and_custom_fracs() -> None:
    # 1000 steps, 20 warmup steps, warmdown 0.5 -> 500 steps 500..999, final 0.0
    assert lr_multiplier(9, 1000, "wsd") == pytest.approx(0.5)
    assert lr_multiplier(19, 1000, "wsd") == 1.0
    assert lr_multiplier(499, 1000, "wsd", warmdown_frac=0.5, final_frac=0.0) == 1.0
    assert lr_multiplier(749, 1000, "wsd", warmdown_frac=0.5, final_frac=0.0) == pytest.approx(0.5)
    assert lr_multiplier(999, 1000, "wsd", warmdown_frac=0.5, final_frac=0.0) == 0.0


def test_no_warmup_and_no_warmdown() -> None:
    assert lr_multiplier(0, 100, "wsd", warmup_frac=0.0) == 1.0
    assert lr_multiplier(0, 100, "cosine", warmup_frac=0.0) == 1.0
    assert all(lr_multiplier(s, 100, "wsd", warmup_frac=0.0, warmdown_frac=0.0) == 1.0 for s in range(100))
    # a tiny warmup_frac still gives one warmup step, which is already at 1.0
    assert lr_multiplier(0, 10, "wsd", warmup_frac=0.001) == 1.0


@pytest.mark.parametrize("kind", ["wsd", "cosine"])
@pytest.mark.parametrize("total", [1, 2, 5, 37, 100, 1001])
def test_shape_properties(kind: str, total: int) -> None:
    m = [lr_multiplier(s, total, kind, warmup_frac=0.1, warmdown_frac=0.4, final_frac=0.05)
         for s in range(total)]
    assert all(0.0 < x <= 1.0 for x in m)
    peak = m.index(max(m))
    assert all(a <= b for a, b in zip(m[:peak], m[1:peak + 1]))  # warmup non-decreasing
    assert all(a >= b for a, b in zip(m[peak:], m[peak + 1:]))  # then non-increasing
    assert all(x >= 0.05 for x in m[peak:])
    assert m[-1] == 0.05
    if total >= 20:
        assert max(m) == 1.0


@pytest.mark.parametrize(("kwargs", "arg"), [
    ({"step": -1}, "step"),
    ({"step": 100}, "step"),
    ({"step": 1.5}, "step"),
    ({"total_steps": 0, "step": 0}, "total_steps"),
    ({"total_steps": 10.0}, "total_steps"),
    ({"kind": "linear"}, "kind"),
    ({"warmup_frac": -0.1}, "warmup_frac"),
    ({"warmup_frac": 1.5}, "warmup_frac"),
    ({"warmdown_frac": 2.0}, "warmdown_frac"),
    ({"final_frac": 1.1}, "final_frac"),
    ({"final_frac": -0.5}, "final_frac"),
    ({"warmup_frac": 0.8, "warmdown_frac": 0.3}, "warmup_frac \\+ warmdown_frac"),
])
def test_bad_args(kwargs: dict, arg: str) -> None:
    call = {"step": 0, "total_steps": 100, "kind": "wsd", **kwargs}
    with pytest.raises(ValueError, match=arg):
        lr_multiplier(**call)


def test_cosine_ignores_warmdown_window() -> None:
    assert lr_multiplier(50, 100, "cosine", warmup_frac=0.8, warmdown_frac=0.3) == pytest.approx(
        lr_multiplier(50, 100, "cosine", warmup_frac=0.8, warmdown_frac=0.0))
