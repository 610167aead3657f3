import math

import pytest

from sandbox.checkers import check, exact, floats_close, tokens


def test_exact_allows_only_one_trailing_newline():
    assert exact("3\n", "3") and exact("3", "3\n")
    assert not exact("3\n\n", "3") and not exact(" 3", "3") and not exact("3 ", "3")


def test_tokens_ignores_whitespace_layout_only():
    assert tokens("1  2\n3\n", "1 2 3")
    assert not tokens("1 2", "1 2 3") and not tokens("12 3", "1 23")


@pytest.mark.parametrize("got,want,ok", [
    ("0.1000001", "0.1", True),            # abs error 1e-7
    ("1000000.5", "1000000", True),         # rel error 5e-7
    ("0.100002", "0.1", False),             # abs 2e-6 and rel 2e-5: both over
    ("nan", "nan", False),                  # NaN never equals, not even NaN
    ("inf", "inf", True), ("-inf", "inf", False), ("1e308", "inf", False),
    ("123456789012345678901234567890", "123456789012345678901234567890", True),
    ("123456789012345678901234567891", "123456789012345678901234567890", True),  # within rel 1e-6 as floats
    ("yes 1.0", "yes 1", True), ("no 1.0", "yes 1", False), ("1 2", "1", False),
])
def test_float_checker_edges(got, want, ok):
    assert floats_close(got, want) is ok


def test_float_tolerances_are_parameters():
    assert floats_close("1.05", "1.0", abs_tol=0.1, rel_tol=0) and not floats_close("1.05", "1.0", abs_tol=0.01, rel_tol=0)


def test_huge_integers_compare_exactly_under_tokens():
    assert not tokens("123456789012345678901234567891", "123456789012345678901234567890")


def test_unknown_checker_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown checker 'fuzzy'"):
        check("fuzzy", "1", "1")
    assert math.isnan(float("nan"))
