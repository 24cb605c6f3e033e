"""SQLite stores each user's id once (migration 7): ``users``, ``reading_rows`` by number.

* the rows and their indexes hold the user's number, each id is in ``users`` once;
* ``readings`` is a view that reads, and is written by hand, as the table did;
* a file written before migration 7 keeps its history.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from weightstream.cli import app
from weightstream.config import Config
from weightstream.pipeline import process_file
from weightstream.store import schema, sqlite
from weightstream.store.columns import (
    READINGS,
    RESULT_DECIDED_IN_READING,
    RESULT_FROM_READING,
    RESULTS,
)
from weightstream.store.sqlite import SQLiteStore


def _export(tmp_path: Path) -> Path:
    src = tmp_path / "export.csv"
    args = ["synth", "--users", "8", "--per-user", "12", "--seed", "7", "--out", str(src)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return src


def _histories(store: SQLiteStore, users: list[str]) -> dict[str, list[object]]:
    return {u: store.history(u) for u in users}


def test_each_user_id_is_stored_once_and_rows_hold_its_number(tmp_path: Path) -> None:
    src = _export(tmp_path)
    with SQLiteStore(tmp_path / "w.db") as store:
        process_file(src, store, Config())
    conn = sqlite3.connect(tmp_path / "w.db")
    users = conn.execute("SELECT count(*), count(DISTINCT user_id) FROM users").fetchone()
    assert users[0] == users[1] == 8
    kinds = {t for (t,) in conn.execute("SELECT DISTINCT typeof(uid) FROM reading_rows")}
    assert kinds == {"integer"}
    # the view gives every row its user's id back
    assert conn.execute(
        "SELECT count(*) FROM readings r JOIN reading_rows g ON g.seq = r.seq "
        "JOIN users u ON u.uid = g.uid WHERE r.user_id != u.user_id"
    ).fetchone() == (0,)
    assert (
        conn.execute("SELECT count(*) FROM readings").fetchone()
        == conn.execute("SELECT count(*) FROM reading_rows").fetchone()
    )


def test_the_readings_view_is_written_as_the_table_was(tmp_path: Path) -> None:
    src = _export(tmp_path)
    with SQLiteStore(tmp_path / "w.db") as store:
        process_file(src, store, Config())
        (user,) = store.connection.execute("SELECT user_id FROM users LIMIT 1").fetchone()
        before = store.history(user)
    conn = sqlite3.connect(tmp_path / "w.db")
    with conn:
        first = before[0].measurement.reading_id
        conn.execute("UPDATE readings SET user_id = 'moved', source = 's2' WHERE key = ?", (first,))
        conn.execute(
            "INSERT INTO readings (key, content_key, user_id, ts, value, unit, weight_kg, "
            "source, verdict, reason, message) VALUES ('new', 'h:new', 'added', "
            "1735718400000000, 80.0, 'kg', 80.0, 's', 'accepted', 'ok', '')"
        )
        conn.execute(
            "DELETE FROM readings WHERE user_id = ? AND key = ?",
            (user, before[-1].measurement.reading_id),
        )
    conn.close()
    with SQLiteStore(tmp_path / "w.db") as store:
        moved = store.history("moved")
        assert [(r.measurement.reading_id, r.measurement.source) for r in moved] == [(first, "s2")]
        assert [r.measurement.reading_id for r in store.history("added")] == ["new"]
        after = store.history(user)
        assert [r.measurement.reading_id for r in after] == [
            r.measurement.reading_id for r in before[1:-1]
        ]


def test_a_history_written_before_migration_7_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, linked_writer: Any
) -> None:
    src = _export(tmp_path)
    path = tmp_path / "w.db"
    monkeypatch.setattr(sqlite, "MIGRATIONS", schema.MIGRATIONS[:6])
    # version 6 wrote each result of a staged reading as a row of ``results`` linked to it
    kept = [
        n
        for n in RESULTS.names[1:]
        if n not in RESULT_FROM_READING and n not in RESULT_DECIDED_IN_READING
    ]
    monkeypatch.setattr(SQLiteStore, "_insert_staged", linked_writer(kept))
    monkeypatch.setattr(sqlite, "_READING_INSERT", READINGS.insert())
    monkeypatch.setattr(sqlite, "_USER_INSERT", "INSERT INTO inputs (input_id) SELECT ?1 WHERE 0")
    with SQLiteStore(path) as old:
        process_file(src, old, Config(), out=tmp_path / "old.csv")
        users = sorted({u for (u,) in old.connection.execute("SELECT user_id FROM readings")})
        before = _histories(old, users)
    monkeypatch.undo()
    with SQLiteStore(path) as store:
        assert _histories(store, users) == before
        process_file(src, store, Config(), out=tmp_path / "again.csv")
    assert (tmp_path / "again.csv").read_bytes() == (tmp_path / "old.csv").read_bytes()
    conn = sqlite3.connect(path)
    assert [
        t for (t,) in conn.execute("SELECT type FROM sqlite_master WHERE name = 'readings'")
    ] == ["view"]
