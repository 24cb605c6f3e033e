"""Weight texts: plain ASCII decimals only; every G2 case has its reason."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from weightstream.ingest import RowProblem, parse_number
from weightstream.model import Reason


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("72", 72.0),
        (" 72 ", 72.0),
        ("\t72.5\r\n", 72.5),
        ("72.", 72.0),
        (".5", 0.5),
        ("+80.25", 80.25),
        ("7.25e1", 72.5),
        ("1E2", 100.0),
        ("102.05828325", 102.05828325),
    ],
)
def test_plain_numbers_are_read(text: str, expected: float) -> None:
    """Plain ASCII decimals, with sign, exponent or surrounding ASCII whitespace, are read."""
    assert parse_number(text) == expected


def _reason(text: str | None) -> Reason:
    result = parse_number(text)
    assert isinstance(result, RowProblem), result
    assert result.field == "weight"
    return result.reason


@pytest.mark.parametrize("text", [None, "", "   ", "NULL", "null", "None", "NA", "n/a", "nil"])
def test_missing_values(text: str | None) -> None:
    """None, empty text and the null words are MISSING_VALUE."""
    assert _reason(text) is Reason.MISSING_VALUE


@pytest.mark.parametrize(
    "text", ["nan", "NaN", "-nan", "inf", "+inf", "-inf", "Infinity", "1e309", "-1e309", "9" * 400]
)
def test_non_finite_values(text: str) -> None:
    """nan, inf and numbers that overflow to inf are NON_FINITE."""
    assert _reason(text) is Reason.NON_FINITE


@pytest.mark.parametrize("text", ["0", "0.0", "-0", "-0.0", "+0", "-72.5", "-1e3", "0e5"])
def test_non_positive_values(text: str) -> None:
    """Zero (including -0) and negative numbers are NON_POSITIVE."""
    assert _reason(text) is Reason.NON_POSITIVE


def test_decimal_comma_is_refused_not_corrected() -> None:
    """'72,5' is NOT_A_NUMBER and the message says decimal comma."""
    result = parse_number("72,5")
    assert isinstance(result, RowProblem)
    assert result.reason is Reason.NOT_A_NUMBER
    assert "decimal comma" in result.message
    assert "72" not in result.message


@pytest.mark.parametrize(
    "text",
    [
        "７２",  # full-width digits: float() accepts them
        "٧٢",  # Arabic-Indic digits
        "72\u00a0",  # no-break space
        "\u200972",
        "7_2",
        "0x48",
        "72kg",
        "seventy",
        "1,072.5",
        "72..5",
        "e5",
        "--72",
        "\x1f72",  # str.strip() would remove it; we do not
        "7 2",
    ],
)
def test_not_plain_numbers_are_refused(text: str) -> None:
    """Anything float() might accept but is not a plain ASCII decimal is NOT_A_NUMBER."""
    assert _reason(text) is Reason.NOT_A_NUMBER


@given(st.text(max_size=30))
def test_any_text_gives_a_positive_finite_float_or_a_problem(text: str) -> None:
    """For any text the result is a positive finite float or a RowProblem; nothing raises."""
    result = parse_number(text)
    if isinstance(result, RowProblem):
        assert result.field == "weight"
    else:
        assert math.isfinite(result) and result > 0
        assert text.isascii() and "_" not in text and "," not in text


@given(st.floats(min_value=1e-300, max_value=1e300, allow_nan=False, allow_infinity=False))
def test_repr_of_a_positive_float_round_trips(value: float) -> None:
    """Every positive finite float written with repr is read back exactly."""
    assert parse_number(repr(value)) == value
    assert parse_number(f" {value!r}\t") == value


def test_messages_never_contain_the_value() -> None:
    """No problem message quotes the weight text (health data)."""
    for text in ("-72.5", "nan", "1e309", "72,5", "７２", "7_2", "72kg"):
        result = parse_number(text)
        assert isinstance(result, RowProblem)
        assert text not in result.message
