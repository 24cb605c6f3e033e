"""SQLite's results (migrations 5, 6 and 8): kept with the readings' rows.

* the result a stored reading got from the input that stored it is kept in the reading's row
  (migration 8; before, a row of ``results`` linked to it), and reads back whole (the store's
  queries, the ``results_full`` view, the results file);
* one result per input row still holds: a unit whose results repeat rows already committed
  writes nothing;
* a replay copies out the results it would otherwise change;
* a file written before migration 5, 6 or 8 keeps its results.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from weightstream.cli import app
from weightstream.config import Config
from weightstream.errors import ConflictError
from weightstream.ingest import file_digest
from weightstream.model import Result, Verdict
from weightstream.pipeline import process_file, write_results
from weightstream.store import schema, sqlite
from weightstream.store.base import UnitOfWork
from weightstream.store.columns import (
    READINGS,
    RESULT_DECIDED_IN_READING,
    RESULT_FROM_READING,
    RESULTS,
)
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


def test_a_readings_result_is_kept_in_its_row_and_reads_back_whole(tmp_path: Path) -> None:
    """Results kept in their readings' rows read back as a memory store keeps them."""
    src = _export(tmp_path)
    config = Config(processing={"commit_group_size": 100})
    memory = MemoryStore()
    process_file(src, memory, config, out=tmp_path / "m.csv")
    with SQLiteStore(tmp_path / "w.db") as store:
        process_file(src, store, config, out=tmp_path / "s.csv")
        input_id = file_digest(src)
        assert list(store.results_for_input(input_id)) == list(memory.results_for_input(input_id))
        write_results(store, input_id, tmp_path / "stored.csv")  # the file from the store
    assert (tmp_path / "s.csv").read_bytes() == (tmp_path / "m.csv").read_bytes()
    assert (tmp_path / "stored.csv").read_bytes() == (tmp_path / "m.csv").read_bytes()
    conn = sqlite3.connect(tmp_path / "w.db")
    kept, readings, own_rows = conn.execute(
        "SELECT count(input_ref), count(*), (SELECT count(*) FROM results) FROM reading_rows"
    ).fetchone()
    # Most stored readings were decided by the compiled loop: their results are in their rows
    # (and only those readings' results: the rest are rows of ``results``).
    assert kept > 0.8 * readings
    total = conn.execute("SELECT count(*) FROM results_full").fetchone()[0]
    assert total == kept + own_rows == len(list(store_rows(tmp_path / "w.db", input_id)))


def store_rows(path: Path, input_id: str) -> list[tuple[object, ...]]:
    with SQLiteStore(path) as store:
        return list(store.iter_result_rows(input_id))


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


def test_a_units_readings_take_seqs_in_order_and_spans_cover_them(tmp_path: Path) -> None:
    """A unit's staged readings are inserted by two statements (rows whose often-NULL columns
    are all NULL, and the others); they still take consecutive seqs in the order they were
    decided, and the input's spans cover exactly its rows."""
    src = _export(tmp_path, users=8, per_user=40)
    units: list[UnitOfWork] = []

    class Keeping(SQLiteStore):
        def commit(self, unit: UnitOfWork) -> None:
            units.append(unit)
            super().commit(unit)

    with Keeping(tmp_path / "w.db") as store:
        process_file(src, store, Config(processing={"commit_group_size": 50}))
        conn = store.connection
        rows = conn.execute(
            "SELECT uid, ts, seq FROM reading_rows WHERE input_ref IS NOT NULL ORDER BY seq"
        ).fetchall()
        spans = conn.execute("SELECT first_seq, last_seq FROM input_spans ORDER BY 1").fetchall()
    # the spans do not overlap and hold every row kept with its result, and nothing else
    assert all(a[1] < b[0] for a, b in zip(spans, spans[1:], strict=False))
    covered = {seq for first, last in spans for seq in range(first, last + 1)}
    assert covered == {seq for _, _, seq in rows}
    # A unit whose every third staged reading has a reset (a row for the longer statement),
    # committed to a new file: the rows' seqs still follow the staged order.
    unit = next(u for u in units if len(u.reading_rows) >= 30)
    at = READINGS.index("reset_type")
    unit.reading_rows = [
        (*r[:at], "soft", "committed", *r[at + 2 :]) if k % 3 == 0 else r
        for k, r in enumerate(unit.reading_rows)
    ]
    unit.states, unit.expected_versions, unit.last_good, unit.position = {}, {}, {}, None
    with SQLiteStore(tmp_path / "x.db") as store:
        store.commit(unit)
        stored = store.connection.execute(
            "SELECT key, reset_type FROM readings ORDER BY seq"
        ).fetchall()
    staged = [(r[READINGS.index("key")], r[at]) for r in unit.reading_rows]
    assert stored[-len(staged) :] == staged


LinkedWriter = Callable[[list[str]], Callable[[SQLiteStore, UnitOfWork], list[tuple[Any, ...]]]]


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
        (initial_rows,) = store.connection.execute("SELECT count(*) FROM results").fetchone()
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
    # each changed reading's first result moved out of its row into ``results``, whole
    copied = conn.execute(
        "SELECT count(*) FROM results r JOIN inputs i ON i.ref = r.input_ref "
        "WHERE i.input_id = ? AND r.reading_id IS NOT NULL",
        (file_digest(first),),
    ).fetchone()[0]
    still_kept = conn.execute("SELECT count(*) FROM reading_rows WHERE input_ref = 1").fetchone()
    assert copied - initial_rows == len(changed)
    assert still_kept == (len(days) - copied,)
    write_again = tmp_path / "a2.csv"
    with SQLiteStore(tmp_path / "w.db") as store:
        process_file(first, store, Config(), out=write_again)  # a finished input: rewritten
    assert write_again.read_bytes() == (tmp_path / "a1.csv").read_bytes()


def test_results_written_before_migration_6_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, linked_writer: LinkedWriter
) -> None:
    """Linked results that still repeat their reading's decision read back the same after
    migration 6, and new ones are written without it."""
    src = _export(tmp_path, users=6, per_user=15)
    path = tmp_path / "w.db"
    monkeypatch.setattr(sqlite, "MIGRATIONS", schema.MIGRATIONS[:5])
    # the linked insert of version 5: the decision repeated in the result's row
    kept = [n for n in RESULTS.names[1:] if n not in RESULT_FROM_READING]
    monkeypatch.setattr(SQLiteStore, "_insert_staged", linked_writer(kept))
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


def test_results_written_before_migration_8_are_kept_and_copied_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, linked_writer: LinkedWriter
) -> None:
    """Results written as linked rows of ``results`` (versions 6 and 7) read back the same
    after migration 8, and a replay still copies out those it would change."""
    days = [f"2024-03-{d:02d}T07:00:00" for d in range(1, 13)]
    first = _csv(tmp_path / "a.csv", [(f"r{k}", day, 80.0 - 0.1 * k) for k, day in enumerate(days)])
    late = _csv(tmp_path / "b.csv", [("late", "2024-03-04T19:00:00", 81.5)])
    path = tmp_path / "w.db"
    monkeypatch.setattr(sqlite, "MIGRATIONS", schema.MIGRATIONS[:7])
    kept = [
        n
        for n in RESULTS.names[1:]
        if n not in RESULT_FROM_READING and n not in RESULT_DECIDED_IN_READING
    ]
    monkeypatch.setattr(SQLiteStore, "_insert_staged", linked_writer(kept))
    with SQLiteStore(path) as old:
        process_file(first, old, Config(), out=tmp_path / "a1.csv")
        before = list(old.results_for_input(file_digest(first)))
    conn = sqlite3.connect(path)
    linked = conn.execute("SELECT count(*) FROM results WHERE verdict IS NULL").fetchone()[0]
    assert linked >= 8  # the readings the loop decided: results linked to them
    conn.close()
    monkeypatch.undo()
    with SQLiteStore(path) as store:
        assert list(store.results_for_input(file_digest(first))) == before
        process_file(late, store, Config(), out=tmp_path / "b.out")  # replays the others
        assert list(store.results_for_input(file_digest(first))) == before
        process_file(first, store, Config(), out=tmp_path / "a2.csv")
    assert (tmp_path / "a2.csv").read_bytes() == (tmp_path / "a1.csv").read_bytes()
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT max(version) FROM schema_migrations").fetchone() == (8,)
    # the replay gave the linked results it changed their own copy of what they were given
    still_linked = conn.execute("SELECT count(*) FROM results WHERE verdict IS NULL").fetchone()[0]
    assert 0 < linked - still_linked < linked
