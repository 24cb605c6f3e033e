"""Weight texts to floats: plain ASCII decimal numbers only, nothing silently corrected.

Policy (the reason code returned for each kind of text)
-------------------------------------------------------
* ``MISSING_VALUE``: ``None``, empty or whitespace-only text, and the null words ``NULL``,
  ``None``, ``NA``, ``N/A``, ``nil`` (any case).
* ``NOT_A_NUMBER``: anything that is not a plain ASCII decimal number, i.e. an optional sign,
  digits with at most one ``.``, and an optional exponent (``7.2e1``). Python's ``float()``
  accepts more than that and all of it is refused here:

  - a decimal comma (``72,5``) or a thousands separator: refused, not guessed at;
  - full-width or other non-ASCII digits (``７２``), non-ASCII spaces;
  - digit-group underscores (``7_2``), hexadecimal (``0x48``), text.
* ``NON_FINITE``: ``nan``, ``inf``, ``infinity`` (any case, any sign), and numbers that
  overflow a float (``1e309``).
* ``NON_POSITIVE``: zero (including ``-0``) and negative numbers.

Only ASCII whitespace is trimmed (``' 72 '`` is 72.0). Ranges are not checked here: that needs
the unit (see :mod:`weightstream.ingest.rows`). Messages never contain the value.
"""

from __future__ import annotations

import math
import numbers
import re
from typing import Final

from weightstream.ingest._problem import ASCII_WHITESPACE, NULL_TOKENS, RowProblem
from weightstream.model import Reason

__all__ = ["parse_number", "check_number"]

_FIELD: Final = "weight"
_NON_FINITE_WORDS: Final = frozenset(
    sign + word for sign in ("", "+", "-") for word in ("nan", "inf", "infinity")
)
_PLAIN: Final = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")

_MISSING: Final = RowProblem(Reason.MISSING_VALUE, _FIELD, "weight is empty or null")
_NON_FINITE: Final = RowProblem(Reason.NON_FINITE, _FIELD, "weight is not a finite number")
_NON_POSITIVE: Final = RowProblem(Reason.NON_POSITIVE, _FIELD, "weight is zero or negative")
_DECIMAL_COMMA: Final = RowProblem(
    Reason.NOT_A_NUMBER,
    _FIELD,
    "weight has a comma (decimal comma or thousands separator); "
    "refused, not corrected: use a decimal point",
)
_NON_ASCII: Final = RowProblem(
    Reason.NOT_A_NUMBER,
    _FIELD,
    "weight has non-ASCII characters (e.g. full-width digits); only ASCII digits are read",
)
_UNDERSCORE: Final = RowProblem(
    Reason.NOT_A_NUMBER, _FIELD, "weight has '_' digit separators; refused, not corrected"
)
_NOT_PLAIN: Final = RowProblem(Reason.NOT_A_NUMBER, _FIELD, "weight is not a plain decimal number")
_NOT_REAL: Final = RowProblem(
    Reason.NOT_A_NUMBER, _FIELD, "weight is not a real number (int or float; text is not parsed)"
)


def parse_number(text: str | None) -> float | RowProblem:
    """The positive finite number in ``text``, or a :class:`RowProblem` saying why not.

    >>> parse_number(" 72.5 ")
    72.5
    >>> [parse_number(t).reason.value for t in ("NULL", "72,5", "inf", "-0")]
    ['missing_value', 'not_a_number', 'non_finite', 'non_positive']
    """
    if text is None:
        return _MISSING
    if not text.isascii():
        return _NON_ASCII
    body = text.strip(ASCII_WHITESPACE)
    if body.replace(".", "", 1).isdigit():
        # Fast path: unsigned digits with at most one point, ASCII only (checked above).
        value = float(body)
    else:
        problem = _classify(body)
        if problem is not None:
            return problem
        value = float(body)
    return _positive(value)


def check_number(value: object) -> float | RowProblem:
    """A weight given as a value, not a text (library, API): the checks and reasons of
    :func:`parse_number` after it has read its text.

    Any real number but ``bool`` is a number; a text is refused, not parsed (a caller with a
    text has a file-like row and should use :func:`weightstream.ingest.to_measurement`).

    >>> check_number(72)
    72.0
    >>> [check_number(v).reason.value for v in ("72", True, float("nan"), 10**400, -0.0)]
    ['not_a_number', 'not_a_number', 'non_finite', 'non_finite', 'non_positive']
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return _NOT_REAL
    try:
        number = float(value)
    except (OverflowError, ValueError, TypeError):
        return _NON_FINITE
    return _positive(number)


def _positive(value: float) -> float | RowProblem:
    """``value`` if it is a finite number above zero, else the problem with it."""
    if not math.isfinite(value):
        return _NON_FINITE
    if value <= 0.0:
        return _NON_POSITIVE
    return value


def _classify(body: str) -> RowProblem | None:
    """The problem with a trimmed ASCII text off the fast path, or None if it is plain."""
    lowered = body.lower()
    if lowered in NULL_TOKENS:
        return _MISSING
    if lowered in _NON_FINITE_WORDS:
        return _NON_FINITE
    if "," in body:
        return _DECIMAL_COMMA
    if "_" in body:
        return _UNDERSCORE
    if _PLAIN.fullmatch(body) is None:
        return _NOT_PLAIN
    return None
