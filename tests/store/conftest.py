"""Fixtures of the store tests: how earlier versions of the store wrote."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from weightstream.store import sqlite
from weightstream.store.base import UnitOfWork
from weightstream.store.columns import RESULTS
from weightstream.store.sqlite import SQLiteStore


@pytest.fixture
def linked_writer() -> Callable[[list[str]], Callable[[SQLiteStore, UnitOfWork], list[Any]]]:
    """Make the store's write of staged readings before migration 8 (for
    ``SQLiteStore._insert_staged``): the reading rows, then each one's result as a row of
    ``results`` holding the result columns ``kept``, linked to its reading by seq."""
    return _linked_writer


def _linked_writer(kept: list[str]) -> Callable[[SQLiteStore, UnitOfWork], list[Any]]:
    """The store's write of staged readings before migration 8: the reading rows, then each
    one's result as a row of ``results`` holding ``kept`` and linked to it by seq."""
    marks = ", ".join(f"?{RESULTS.index(n) + 1}" for n in kept)
    linked = (
        f"INSERT INTO results (input_ref, {', '.join(kept)}, reading_seq) VALUES "
        f"((SELECT ref FROM inputs WHERE input_id = ?1), {marks}, ?{len(RESULTS.names) + 1})"
    )

    def insert_staged(store: SQLiteStore, unit: UnitOfWork) -> list[tuple[Any, ...]]:
        c = store.connection
        c.executemany(sqlite._READING_INSERT, unit.reading_rows)
        (last,) = c.execute("SELECT last_insert_rowid()").fetchone()
        first = last - len(unit.reading_rows) + 1
        rows, paired = unit.result_rows, unit.result_of_reading
        for input_id in {rows[k][0] for k in paired} - {None}:
            c.execute("INSERT OR IGNORE INTO inputs (input_id) VALUES (?)", (input_id,))
        c.executemany(linked, [(*rows[k], first + j) for j, k in enumerate(paired)])
        return [row for k, row in enumerate(rows) if k not in set(paired)]

    return insert_staged
