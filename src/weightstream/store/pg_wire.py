"""What crosses the wire to PostgreSQL and back, adapted to the store's contract.

PostgreSQL text cannot hold NUL, so text cells are escaped reversibly (``\\x00`` and the
escape character itself, U+FFFF, become two-character sequences; every other text is stored as
is); a NaN float is stored as NULL, as SQLite stores it (:func:`cell`, :func:`rows`,
:func:`back`). A psycopg error becomes one of :mod:`weightstream.errors`' storage errors
(:func:`typed`), and a DSN is shown without its password (:func:`safe`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
import psycopg.errors as pge

from weightstream.errors import (
    ConflictError,
    StorageError,
    StorageFullError,
    StoreBusyError,
    StoreOpenError,
)

__all__ = ["enc", "dec", "cell", "row", "rows", "back", "safe", "typed"]

_NUL = "\x00"
_ESC = "\uffff"
_ESC_NUL = _ESC + "0"
_ESC_ESC = _ESC + "1"


def enc(text: str) -> str:
    """``text`` as stored: NUL and the escape character as two-character sequences.

    >>> dec(enc("a\\x00b\\uffff0")) == "a\\x00b\\uffff0", enc("plain")
    (True, 'plain')
    """
    if _NUL in text or _ESC in text:
        return text.replace(_ESC, _ESC_ESC).replace(_NUL, _ESC_NUL)
    return text


def dec(text: str) -> str:
    """The text :func:`enc` stored (every escape is a pair, so two passes are exact)."""
    if _ESC in text:
        return text.replace(_ESC_NUL, _NUL).replace(_ESC_ESC, _ESC)
    return text


def cell(value: Any) -> Any:
    """One cell as written: text escaped, a NaN float as NULL (as SQLite stores it)."""
    kind = type(value)
    if kind is str:
        return enc(value)
    if kind is float:
        return None if value != value else value
    if isinstance(value, float):  # a numpy float from the compiled engine
        as_float = float(value)
        return None if as_float != as_float else as_float
    return value


def row(cells: Sequence[Any]) -> tuple[Any, ...]:
    """One row as written (:func:`cell` of each)."""
    return tuple(cell(v) for v in cells)


def rows(written: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Rows as written: the same list when no cell needs :func:`cell` (the usual case).

    One scan that only compares is several times cheaper than rebuilding every row.
    """
    for one in written:
        for v in one:
            if v.__class__ is str:
                if _NUL in v or _ESC in v:
                    return [row(r) for r in written]
            elif v != v:  # NaN: the only value unequal to itself
                return [row(r) for r in written]
    return written


def back(cells: Sequence[Any]) -> tuple[Any, ...]:
    """A row as read: text cells unescaped."""
    return tuple(dec(v) if type(v) is str else v for v in cells)


def safe(dsn: str) -> str:
    """The DSN without a password, for messages."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.Error:
        return "(unparsable DSN)"
    info.pop("password", None)
    return psycopg.conninfo.make_conninfo("", **info)


def typed(exc: psycopg.Error) -> StorageError:
    """Map a psycopg error to our tree (never retry-and-assume-success)."""
    if isinstance(exc, pge.UniqueViolation | pge.SerializationFailure | pge.DeadlockDetected):
        return ConflictError(f"another writer got there first: {exc}")
    if isinstance(exc, pge.LockNotAvailable | pge.QueryCanceled | pge.TooManyConnections):
        return StoreBusyError(f"database is locked by another writer: {exc}")
    if isinstance(exc, pge.DiskFull | pge.OutOfMemory):
        return StorageFullError(f"storage full: {exc}")
    if isinstance(exc, pge.InvalidCatalogName | pge.InvalidAuthorizationSpecification):
        return StoreOpenError(f"cannot use the database: {exc}")
    return StorageError(f"storage failure: {exc}")
