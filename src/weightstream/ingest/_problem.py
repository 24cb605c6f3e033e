"""What the ingest layer says about a row it cannot use, and text helpers its parsers share.

A :class:`RowProblem` is a *value*, not an exception: every parser in :mod:`weightstream.ingest`
returns either its result or a ``RowProblem`` naming the reason code, the field and a short
message. The message may quote a unit or a timestamp text, but never a weight value (health data
stays out of messages and logs).
"""

from __future__ import annotations

from dataclasses import dataclass

from weightstream.model import Reason

__all__ = ["RowProblem", "ASCII_WHITESPACE", "NULL_TOKENS", "is_null", "quote_short"]

#: The whitespace that is trimmed around fields: ASCII only (``str.strip()`` would also strip
#: Unicode spaces and the ASCII separators ``\x1c``-``\x1f``).
ASCII_WHITESPACE = " \t\n\r\x0b\x0c"

#: Field texts (compared after trimming, case-insensitively) that mean "no value". ``nan`` is
#: deliberately not here: as a weight it is a non-finite number (``Reason.NON_FINITE``).
NULL_TOKENS = frozenset({"", "null", "none", "na", "n/a", "nil"})

_SHORT = 40


@dataclass(frozen=True, slots=True)
class RowProblem:
    """Why one row cannot become a :class:`~weightstream.model.Measurement`.

    ``field`` is the canonical field name (``user_id``, ``timestamp``, ``weight``, ``unit``,
    ``row``). ``message`` is for people and never contains the weight value.

    >>> RowProblem(Reason.MISSING_USER, "user_id", "user id is empty").reason
    <Reason.MISSING_USER: 'missing_user'>
    """

    reason: Reason
    field: str
    message: str


def is_null(text: str | None) -> bool:
    """True for ``None``, empty or whitespace-only text and the :data:`NULL_TOKENS`.

    >>> [is_null(t) for t in (None, "", "  ", "NULL", "n/a", "x", "nan")]
    [True, True, True, True, True, False, False]
    """
    if text is None:
        return True
    body = text.strip(ASCII_WHITESPACE)
    return len(body) <= 4 and body.lower() in NULL_TOKENS


def quote_short(text: str) -> str:
    """``repr`` of ``text`` cut to 40 characters, for quoting a unit or timestamp in a message.

    >>> quote_short("kg/m2")
    "'kg/m2'"
    >>> quote_short("x" * 100)
    "'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'..."
    """
    if len(text) <= _SHORT:
        return repr(text)
    return repr(text[:_SHORT]) + "..."
