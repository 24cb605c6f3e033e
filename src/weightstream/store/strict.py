"""Strict decoding of stored values: each one checked for its type and range.

SQLite keeps whatever type it is given, and a row may have been written by an older version,
another program or a disk fault. The codec (:mod:`weightstream.store.codec`) decodes every
stored value through these functions: an integer column must hold an integer, a float column
a number or NULL (NULL is how SQLite stores a NaN: it reads back as NaN, for the validator to
name), a flag 0 or 1, a time an integer within the datetime range, a reset type a known name.
A value that does not decode raises :class:`Bad` naming the field and what is wrong with it,
never the value itself (it may be a weight).
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from weightstream.model import ResetType, from_micros

__all__ = [
    "Bad",
    "MAX_VERSION",
    "integer",
    "version",
    "count",
    "flag",
    "number",
    "time",
    "opt_time",
    "reset_type",
    "kind",
]


class Bad(Exception):
    """One field of a stored row that does not decode: the field, and why (never the value)."""

    def __init__(self, field: str, why: str) -> None:
        super().__init__(field, why)
        self.field = field
        self.why = why


#: Versions are SQLite INTEGERs (signed 64 bits); one this large cannot be followed by another.
MAX_VERSION = 2**62


def integer(value: Any, name: str) -> int:
    if type(value) is not int:
        raise Bad(name, f"{kind(value)} where an integer must be")
    return value


def version(value: Any) -> int:
    v = integer(value, "version")
    if not 1 <= v < MAX_VERSION:
        raise Bad("version", "not between 1 and 2**62")
    return v


def count(value: Any, name: str) -> int:
    v = integer(value, name)
    if v < 0:
        raise Bad(name, "negative count")
    return v


def flag(value: Any, name: str) -> bool:
    if integer(value, name) not in (0, 1):
        raise Bad(name, "a flag that is neither 0 nor 1")
    return bool(value)


def number(value: Any, name: str) -> float:
    """A stored float; NULL (SQLite's NaN) reads back as NaN, for the validator to name."""
    if value is None:
        return math.nan
    if type(value) is float:
        return value
    if type(value) is int:
        return float(value)
    raise Bad(name, f"{kind(value)} where a number must be")


def time(value: Any, name: str) -> datetime:
    micros = integer(value, name)
    try:
        return from_micros(micros)
    except OverflowError:
        raise Bad(name, "a time outside the datetime range") from None


def opt_time(value: Any, name: str) -> datetime | None:
    return None if value is None else time(value, name)


def reset_type(value: Any, name: str) -> ResetType | None:
    if value is None:
        return None
    try:
        return ResetType(value)
    except ValueError:
        raise Bad(name, "not a known reset type") from None


def kind(value: Any) -> str:
    """The SQL-ish kind of a stored value, for messages (never the value itself)."""
    if value is None:
        return "NULL"
    return {str: "text", bytes: "blob", float: "a real", int: "an integer"}.get(
        type(value), type(value).__name__
    )
