"""SQLite store edges: fork guard, corrupt files, failed migrations, error mapping."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from weightstream.errors import (
    ConflictError,
    StorageError,
    StorageFullError,
    StoreBusyError,
    StoreOpenError,
)
from weightstream.model import UserState
from weightstream.store import schema, sqlite, sqlite_open
from weightstream.store.base import UnitOfWork
from weightstream.store.sqlite import SQLiteStore


def _unit() -> UnitOfWork:
    unit = UnitOfWork()
    unit.put_state(UserState(user_id="u1", version=1), 0)
    return unit


def test_connection_is_never_used_across_fork(tmp_path: Path) -> None:
    """A store opened in one process refuses to write from another (after fork)."""
    store = SQLiteStore(tmp_path / "ws.db")
    store._pid = -1  # what a forked child sees: a different pid than the opener's
    with pytest.raises(StorageError, match="fork"):
        store.commit(_unit())
    store.close()
    assert SQLiteStore(tmp_path / "ws.db").load_state("u1") is None


def test_corrupt_database_is_refused_and_left_untouched(tmp_path: Path) -> None:
    """A file with a SQLite header but garbage pages is refused at open and not modified."""
    path = tmp_path / "ws.db"
    store = SQLiteStore(path)
    store.commit(_unit())
    store.close()
    for side in ("-wal", "-shm"):
        Path(f"{path}{side}").unlink(missing_ok=True)
    data = bytearray(path.read_bytes())
    data[100:4096] = b"\xde\xad\xbe\xef" * ((4096 - 100) // 4)  # the schema page's body
    path.write_bytes(bytes(data))
    with pytest.raises(StoreOpenError):
        SQLiteStore(path)
    assert path.read_bytes() == bytes(data)


def test_failed_migration_leaves_no_trace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A migration that fails half-way is rolled back whole: no table, no version recorded."""
    broken = (*schema.MIGRATIONS, (99, "broken", ("CREATE TABLE half (x)", "NOT SQL AT ALL")))
    monkeypatch.setattr(sqlite, "MIGRATIONS", broken)
    path = tmp_path / "ws.db"
    with pytest.raises(StoreOpenError):
        SQLiteStore(path)
    conn = sqlite3.connect(path)
    versions = {v for (v,) in conn.execute("SELECT version FROM schema_migrations")}
    tables = {t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    conn.close()
    assert 99 not in versions and 1 in versions
    assert "half" not in tables


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (sqlite3.OperationalError("database or disk is full"), StorageFullError),
        (sqlite3.OperationalError("database is locked"), StoreBusyError),
        (sqlite3.IntegrityError("UNIQUE constraint failed: readings.key"), ConflictError),
        (sqlite3.IntegrityError("CHECK constraint failed: p00 > 0"), StorageError),
        (sqlite3.DatabaseError("database disk image is malformed"), StoreOpenError),
        (sqlite3.OperationalError("disk I/O error"), StorageError),
    ],
)
def test_sqlite_errors_map_to_the_typed_tree(
    error: sqlite3.Error, expected: type[StorageError]
) -> None:
    """Each SQLite failure becomes the one typed error an operator can act on."""
    typed = sqlite_open.typed(error)
    assert type(typed) is expected


def test_queries_on_a_closed_store_raise_a_typed_error(tmp_path: Path) -> None:
    """A query that SQLite refuses surfaces as a StorageError, never a bare sqlite3 error."""
    store = SQLiteStore(tmp_path / "ws.db")
    store.close()
    with pytest.raises(StorageError):
        store.load_state("u1")
    with pytest.raises(StorageError):
        list(store.results_for_input("in.csv"))
    with pytest.raises(StorageError):
        list(store.iter_result_rows("in.csv"))


def test_unit_length_counts_its_results() -> None:
    """len(unit) is the number of result rows it will write."""
    from weightstream.model import Result, Verdict

    unit = UnitOfWork()
    unit.results.append(("in.csv", Result(None, None, Verdict.INVALID, row=2)))
    assert len(unit) == 1 and not unit.empty


def test_the_merged_rows_pieces_are_tuples() -> None:
    """A staged row is cut into pieces by itemgetters: each must pick two or more columns,
    or it gives a bare value and the flattened row loses its shape."""
    pieces = (
        sqlite._READING_HEAD,
        sqlite._RESULT_HEAD,
        sqlite._OFTEN_NULL_READING,
        sqlite._OFTEN_NULL_RESULT,
    )
    assert min(map(len, pieces)) > 1
    row = tuple(range(100))
    for get in (
        sqlite._reading_head,
        sqlite._result_head,
        sqlite._reading_tail,
        sqlite._result_tail,
    ):
        assert isinstance(get(row), tuple)
