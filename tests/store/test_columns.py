"""The column tables are the one statement of each stored record (issue 12).

The migrations are literal history, so these tests hold the two together: a fresh file's
tables have exactly the columns of :mod:`weightstream.store.columns`, and a column added to a
copy of a table reaches the DDL, the insert, the select and the results-file header.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from weightstream.store.columns import (
    AUDITS,
    LAST_GOOD,
    READINGS,
    RECOVERIES,
    RESULT_DECIDED_IN_READING,
    RESULT_KEPT_WITH_READING,
    RESULTS,
    STATES,
    Column,
    Kind,
    Table,
)
from weightstream.store.sqlite import SQLiteStore

TABLES = (STATES, LAST_GOOD, READINGS, RESULTS, AUDITS, RECOVERIES)


def _info(conn: sqlite3.Connection, name: str) -> list[tuple[str, str, int]]:
    """(name, declared type, not null) of each column, the row key left out."""
    rows = conn.execute(f"PRAGMA table_info({name})").fetchall()
    return [(r[1], r[2], r[3]) for r in rows if r[1] not in ("id", "seq", "reading_seq")]


@pytest.mark.parametrize("table", TABLES, ids=lambda t: t.name)
def test_fresh_file_has_exactly_the_table_columns(tmp_path: Path, table: Table):
    SQLiteStore(tmp_path / "w.db").close()
    migrated = sqlite3.connect(tmp_path / "w.db")
    derived = sqlite3.connect(":memory:")
    derived.execute("CREATE TABLE inputs (ref INTEGER PRIMARY KEY, input_id TEXT)")
    derived.execute(table.ddl())
    expected = _info(derived, table.name)
    if table is RESULTS:
        # SQLite leaves a linked result's decision in its reading's row (migration 6): the
        # columns that are NOT NULL elsewhere are NULL there, and a CHECK holds them together.
        expected = [
            (n, t, 0 if n in RESULT_DECIDED_IN_READING else notnull) for n, t, notnull in expected
        ]
    name = table.name
    if table is READINGS:
        # SQLite stores a user's id once, in ``users`` (migration 7): the rows are in
        # ``reading_rows`` with the user's number, and ``readings`` is a view giving the id.
        name = "reading_rows"
        expected = [
            ("uid", "INTEGER", 1) if n == "user_id" else (n, t, nn) for n, t, nn in expected
        ]
        # The result a reading got from the input that stored it is kept in its row
        # (migration 8): the input's number and the result's own columns, NULL otherwise.
        expected += [("input_ref", "INTEGER", 0)] + [
            (kept, _declared(n), 0) for n, kept in RESULT_KEPT_WITH_READING.items()
        ]
        view = [r[1] for r in migrated.execute("PRAGMA table_info(readings)")]
        assert view == ["seq", *table.names]
    assert _info(migrated, name) == expected
    # and the declared order is the codec's row order
    assert [c for c, _, _ in _info(migrated, table.name)] == list(table.names)


def _declared(name: str) -> str:
    """The declared type of result column ``name`` in a table made from RESULTS."""
    derived = sqlite3.connect(":memory:")
    derived.execute("CREATE TABLE inputs (ref INTEGER PRIMARY KEY, input_id TEXT)")
    derived.execute(RESULTS.ddl())
    (declared,) = [r[2] for r in derived.execute("PRAGMA table_info(results)") if r[1] == name]
    return str(declared)


def test_a_new_column_flows_through_ddl_insert_select_and_header(tmp_path: Path):
    extra = Column("note", Kind.TEXT, file="note")
    wider = RESULTS.with_column(extra, after="offset_kg")
    assert "note TEXT" in wider.ddl()
    assert wider.file_fields == (*RESULTS.file_fields, "note")
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE inputs (ref INTEGER PRIMARY KEY, input_id TEXT)")
    conn.execute(wider.ddl())
    row = [None] * len(wider.names)
    row[wider.index("verdict")] = "accepted"
    row[wider.index("reason")] = "ok"
    row[wider.index("message")] = ""
    row[wider.index("note")] = "seen"
    conn.execute(wider.insert(), row)
    (got,) = conn.execute(f"SELECT {wider.column_list()} FROM results").fetchall()
    assert got[wider.index("note")] == "seen"
    assert len(got) == len(RESULTS.names) + 1
    with pytest.raises(sqlite3.OperationalError):  # the old table has no such column
        old = sqlite3.connect(":memory:")
        old.execute("CREATE TABLE inputs (ref INTEGER PRIMARY KEY, input_id TEXT)")
        old.execute(RESULTS.ddl())
        old.execute(wider.insert(), row)


def test_the_results_view_has_every_result_column(tmp_path: Path):
    """SQLite keeps a reading's identity once, in its row; ``results_full`` shows a result whole.

    The view is literal (migration 5): a column added to RESULTS must reach it too.
    """
    SQLiteStore(tmp_path / "w.db").close()
    conn = sqlite3.connect(tmp_path / "w.db")
    view = [r[1] for r in conn.execute("PRAGMA table_info(results_full)")]
    assert view == ["id", *RESULTS.names]
