"""Bounded reads the service needs and the store protocol does not offer (yet).

An idempotent answer needs the stored result of a few readings, not a user's whole history:
:func:`stored_results` reads exactly those rows from a SQLite store (one indexed query per
reading, through the store's own connection on the store thread, decoded by the store's own
codec), and falls back to :meth:`~weightstream.store.base.StateStore.history` for any other
store. A ``readings_by_key`` query in the store protocol would make the fallback the only
path.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import replace

from weightstream.model import Measurement, Result
from weightstream.store.base import StateStore
from weightstream.store.codec import row_to_reading
from weightstream.store.columns import READINGS
from weightstream.store.sqlite import SQLiteStore
from weightstream.store.sqlite_open import typed

__all__ = ["stored_results"]

_BY_KEY = (
    f"SELECT {READINGS.column_list()} FROM readings "
    "WHERE user_id = ? AND key = ? AND content_key = ?"
)

#: (user id, reading id, content key) of a stored reading.
Identity = tuple[str, str, str]


def stored_results(store: StateStore, readings: Sequence[Measurement]) -> dict[Identity, Result]:
    """The stored result of each of ``readings`` that is stored as it is (the same user, id
    and content), by (user, reading id, content key)."""
    wanted = {(m.user_id, m.reading_id, m.content_key) for m in readings}
    out: dict[Identity, Result] = {}
    if isinstance(store, SQLiteStore):
        conn = store.connection
        for ident in wanted:
            try:
                row = conn.execute(_BY_KEY, ident).fetchone()
            except sqlite3.Error as exc:
                raise typed(exc) from None
            if row is not None:
                out[ident] = row_to_reading(row)[1]
        return out
    for user in {u for u, _, _ in wanted}:
        for h in store.history(user):
            ident = (user, h.measurement.reading_id, h.measurement.content_key)
            if ident in wanted:
                out[ident] = replace(h.result, row=None)
    return out
