"""SQLite's results table (migration 5): linked to the readings' rows.

* the result of a stored reading names the reading's row instead of repeating its identity,
  and reads back whole (the store's queries, the ``results_full`` view, the results file);
* one result per input row still holds: a unit whose results repeat rows already committed
  writes nothing;
* a file written before migration 5 keeps its results.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from weightstream.cli import app
from weightstream.config import Config
from weightstream.errors import ConflictError, StorageError
from weightstream.ingest import file_digest
from weightstream.model import Result, Verdict
from weightstream.pipeline import process_file
from weightstream.store import schema, sqlite
from weightstream.store.base import UnitOfWork
from weightstream.store.columns import READINGS, RESULT_FROM_READING, RESULTS
from weightstream.store.memory import MemoryStore
from weightstream.store.sqlite import SQLiteStore


def _export(tmp_path: Path, users: int = 30, per_user: int = 20) -> Path:
    src = tmp_path / "export.csv"
    args = [
        "synth",
        "--users",
        str(users),
        "--per-user",
        str(per_user),
        "--seed",
        "41",
        "--out",
        str(src),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return src


def test_a_readings_result_is_linked_and_reads_back_whole(tmp_path: Path) -> None:
    """Linked results carry no identity of their own, and read as a memory store keeps them."""
    src = _export(tmp_path)
    config = Config(processing={"commit_group_size": 100})
    memory = MemoryStore()
    process_file(src, memory, config, out=tmp_path / "m.csv")
    with SQLiteStore(tmp_path / "w.db") as store:
        process_file(src, store, config, out=tmp_path / "s.csv")
        input_id = file_digest(src)
        assert list(store.results_for_input(input_id)) == list(memory.results_for_input(input_id))
    assert (tmp_path / "s.csv").read_bytes() == (tmp_path / "m.csv").read_bytes()
    conn = sqlite3.connect(tmp_path / "w.db")
    linked, bare, readings = conn.execute(
        "SELECT count(reading_seq), sum(reading_seq IS NOT NULL AND user_id IS NULL "
        "AND reading_id IS NULL AND ts IS NULL AND source IS NULL AND weight_kg IS NULL), "
        "(SELECT count(*) FROM readings) FROM results"
    ).fetchone()
    # Most stored readings were decided by the compiled loop, whose results are linked.
    assert linked == bare and linked > 0.8 * readings
    # Every link names the reading the result is about.
    mismatched = conn.execute(
        "SELECT count(*) FROM results r JOIN readings g ON g.seq = r.reading_seq "
        "JOIN results_full f ON f.id = r.id "
        "WHERE f.reading_id != g.key OR f.user_id != g.user_id OR f.ts != g.ts"
    ).fetchone()[0]
    assert mismatched == 0


def _result(row: int) -> Result:
    return Result(None, None, Verdict.INVALID, row=row, message="not a weight")


def _unit(rows: range, position: int) -> UnitOfWork:
    unit = UnitOfWork(position=("in.csv", position))
    unit.results.extend(("in.csv", _result(r)) for r in rows)
    return unit


@pytest.mark.parametrize(
    ("rows", "position"),
    [
        (range(3, 5), 4),  # rows 3-4 again: the unit claims positions 2-3, 0-3 are stored
        (range(4, 7), 6),  # rows 4-6 for positions 3-5: position 3 is stored already
        (range(1, 9), 8),  # every row again, and more
    ],
    ids=["repeat", "overlap", "all-again"],
)
def test_a_unit_repeating_committed_positions_writes_nothing(
    tmp_path: Path, rows: range, position: int
) -> None:
    with SQLiteStore(tmp_path / "w.db") as store:
        store.commit(_unit(range(1, 5), 4))
        with pytest.raises(ConflictError):
            store.commit(_unit(rows, position))
        assert store.position("in.csv") == 4
        assert [r.row for r in store.results_for_input("in.csv")] == [1, 2, 3, 4]
        store.commit(_unit(range(5, 7), 6))  # the next unit, where the last one ended
        assert [r.row for r in store.results_for_input("in.csv")] == [1, 2, 3, 4, 5, 6]


def test_results_written_before_migration_5_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "w.db"
    monkeypatch.setattr(sqlite, "MIGRATIONS", schema.MIGRATIONS[:4])
    with SQLiteStore(path) as old:
        old.commit(_unit(range(1, 3), 2))
    assert "results_full" not in _names(path)
    monkeypatch.undo()
    with SQLiteStore(path) as store:
        assert "results_full" in _names(path)
        assert list(store.results_for_input("in.csv")) == [_result(1), _result(2)]
        store.commit(_unit(range(3, 4), 3))
        assert store.position("in.csv") == 3
        assert [r.row for r in store.results_for_input("in.csv")] == [1, 2, 3]


def _names(path: Path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {n for (n,) in conn.execute("SELECT name FROM sqlite_master")}
    finally:
        conn.close()


def test_linked_results_take_the_seqs_their_readings_were_given(tmp_path: Path) -> None:
    """Reading rows inserted by one statement get consecutive seqs, which the store hands to
    their results; the check behind that refuses rows whose first did not get the first."""
    src = _export(tmp_path, users=5, per_user=12)
    with SQLiteStore(tmp_path / "w.db") as store:
        # A reading row already there (another file's): the group's seqs start after it.
        process_file(src, store, Config(processing={"commit_group_size": 7}))
        conn = store.connection
        rows = conn.execute(f"SELECT {sqlite._READING_COLS} FROM readings ORDER BY seq").fetchall()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("DELETE FROM readings WHERE seq > 3")
            again = [tuple(r) for r in rows[3:6]]
            conn.executemany(sqlite._READING_INSERT, again)
            assert store._first_seq(again) == 4
            with pytest.raises(StorageError):
                store._first_seq(again[::-1])
        finally:
            conn.execute("ROLLBACK")


def _csv(path: Path, rows: list[tuple[str, str, float]]) -> Path:
    lines = ["id,user_id,timestamp,effectiveDateTime,source_type,weight,unit"]
    for ident, day, weight in rows:
        lines.append(f"{ident},u1,{day},{day},patient-device,{weight},kg")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_replay_leaves_an_earlier_inputs_results_as_decided(tmp_path: Path) -> None:
    """Migration 6: a linked result reads its decision from its reading's row. A late reading
    replays the readings after it and changes their rows; the results the earlier input was
    given must not change with them (the store copies them out first)."""
    days = [f"2024-03-{d:02d}T07:00:00" for d in range(1, 13)]
    first = _csv(tmp_path / "a.csv", [(f"r{k}", day, 80.0 - 0.1 * k) for k, day in enumerate(days)])
    late = _csv(tmp_path / "b.csv", [("late", "2024-03-04T19:00:00", 81.5)])
    with SQLiteStore(tmp_path / "w.db") as store:
        process_file(first, store, Config(), out=tmp_path / "a1.csv")
        before = list(store.results_for_input(file_digest(first)))
        history = {row.measurement.reading_id: row.result for row in store.history("u1")}
        process_file(late, store, Config(), out=tmp_path / "b.csv.out")
        after = list(store.results_for_input(file_digest(first)))
        replayed = {row.measurement.reading_id: row.result for row in store.history("u1")}
        # the late reading did change the decisions stored for the readings after it ...
        changed = [k for k in history if history[k].filtered_weight != replayed[k].filtered_weight]
        assert len(changed) >= 5
        # ... and the first input's results are still those it was given, linked or copied
        assert after == before
        assert all(r.verdict is not None for r in after)
    conn = sqlite3.connect(tmp_path / "w.db")
    copied = conn.execute(
        "SELECT count(*) FROM results WHERE reading_seq IS NOT NULL AND verdict IS NOT NULL"
    ).fetchone()[0]
    assert copied == len(changed)
    write_again = tmp_path / "a2.csv"
    with SQLiteStore(tmp_path / "w.db") as store:
        process_file(first, store, Config(), out=write_again)  # a finished input: rewritten
    assert write_again.read_bytes() == (tmp_path / "a1.csv").read_bytes()


def test_results_written_before_migration_6_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Linked results that still repeat their reading's decision read back the same after
    migration 6, and new ones are written without it."""
    src = _export(tmp_path, users=6, per_user=15)
    path = tmp_path / "w.db"
    monkeypatch.setattr(sqlite, "MIGRATIONS", schema.MIGRATIONS[:5])
    # the linked insert of version 5: the decision repeated in the result's row
    kept = [n for n in RESULTS.names[1:] if n not in RESULT_FROM_READING]
    marks = ", ".join(f"?{RESULTS.index(n) + 1}" for n in kept)
    monkeypatch.setattr(
        sqlite,
        "_LINKED_INSERT",
        sqlite._LINKED.format(", ".join(kept), marks, len(RESULTS.names) + 1),
    )
    # and version 5's readings table (the user's id in each row, no users table)
    monkeypatch.setattr(sqlite, "_READING_INSERT", READINGS.insert())
    monkeypatch.setattr(sqlite, "_USER_INSERT", "INSERT INTO inputs (input_id) SELECT ?1 WHERE 0")
    with SQLiteStore(path) as old:
        process_file(src, old, Config(), out=tmp_path / "old.csv")
        before = list(old.results_for_input(file_digest(src)))
    monkeypatch.undo()
    with SQLiteStore(path) as store:
        assert list(store.results_for_input(file_digest(src))) == before
        process_file(src, store, Config(), out=tmp_path / "again.csv")
    assert (tmp_path / "again.csv").read_bytes() == (tmp_path / "old.csv").read_bytes()
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT count(*) FROM results WHERE verdict IS NULL").fetchone() == (0,)
    versions = [v for (v,) in conn.execute("SELECT version FROM schema_migrations")]
    assert versions == sorted(versions) and versions[-1] == schema.MIGRATIONS[-1][0]
