"""PostgreSQL-specific guarantees of :class:`PostgresStore`, on the session's real server.

The contract suite (``tests/contracts``) runs the shared behaviour on every back-end; these are
what only PostgreSQL has: the schema derived from the column tables, migrations under an
advisory lock with concurrent starters, the durability settings required, a foreign schema
refused, CHECK constraints, typed errors for a held lock and an unreachable server, text with
NUL, and the CLI selecting it with ``--db postgresql://...`` and giving the same results file
and the same stored rows as SQLite.
"""

from __future__ import annotations

import math
import sqlite3
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg
import pytest

from weightstream.config import StoreConfig
from weightstream.errors import ConflictError, StorageError, StoreBusyError, StoreOpenError
from weightstream.store.base import UnitOfWork
from weightstream.store.columns import AUDITS, LAST_GOOD, READINGS, RECOVERIES, RESULTS, STATES
from weightstream.store.pg_schema import MIGRATIONS, PG_TYPES, pg_ddl
from weightstream.store.postgres import PostgresStore, is_dsn

from ..contracts.conftest import Backend, _postgres
from ..contracts.test_store_contract import assert_nothing_of, day, full_unit, state, unit_keys

TABLES = (STATES, LAST_GOOD, READINGS, RESULTS, AUDITS, RECOVERIES)


@pytest.fixture
def postgres_backend(postgres_server: Any) -> Any:
    """A schema of its own on the session's server (the contract suite's back-end)."""
    b = _postgres(postgres_server)
    yield b
    b.close_all()


def _columns(conn: psycopg.Connection[Any], table: str) -> list[tuple[str, str, bool]]:
    rows = conn.execute(
        "SELECT column_name, upper(data_type), is_nullable = 'NO' FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = %s ORDER BY ordinal_position",
        (table,),
    ).fetchall()
    return [(n, t, nn) for n, t, nn in rows if n not in ("id", "seq")]


@pytest.mark.parametrize("table", TABLES, ids=lambda t: t.name)
def test_schema_has_exactly_the_table_columns(postgres_backend: Backend, table: Any):
    """Each table has the column table's columns, in order, with the mapped types."""
    postgres_backend.open()
    raw = postgres_backend.raw()  # type: ignore[misc]
    want = [
        (c.name, PG_TYPES[c.kind], "NOT NULL" in c.sql or "PRIMARY KEY" in c.sql)
        for c in table.columns
    ]
    assert _columns(raw, table.name) == want


def test_concurrent_starters_migrate_once(postgres_backend: Backend):
    """Six workers opening a fresh schema at once: every one opens, each migration runs once."""
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def open_one() -> None:
        start.wait()
        try:
            postgres_backend.open()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    raw = postgres_backend.raw()  # type: ignore[misc]
    rows = raw.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
    assert [v for (v,) in rows] == [m[0] for m in MIGRATIONS]


def test_unsafe_durability_is_refused(postgres_server: Any, postgres_backend: Backend):
    """I9: synchronous_commit = off (here for the role's sessions) is refused at open."""
    postgres_server.execute("CREATE ROLE lazy_writer LOGIN SUPERUSER")
    postgres_server.execute("ALTER ROLE lazy_writer SET synchronous_commit = off")
    try:
        dsn = postgres_backend.dsn.replace("postgres@", "lazy_writer@", 1)  # type: ignore[union-attr]
        with pytest.raises(StoreOpenError, match="synchronous_commit=off"):
            PostgresStore(dsn)
        PostgresStore(dsn, allow_unsafe_durability=True).close()
    finally:
        postgres_server.execute("DROP OWNED BY lazy_writer")
        postgres_server.execute("DROP ROLE lazy_writer")


def test_foreign_schema_is_refused_and_untouched(postgres_backend: Backend):
    """B5: a schema holding a 'readings' table of another application is refused, unchanged."""
    raw = postgres_backend.raw()  # type: ignore[misc]
    raw.execute("CREATE TABLE readings (id int, meter text)")
    raw.execute("INSERT INTO readings VALUES (1, 'gas')")
    with pytest.raises(StoreOpenError, match="not a weightstream schema"):
        postgres_backend.open()
    assert raw.execute("SELECT * FROM readings").fetchall() == [(1, "gas")]
    assert raw.execute("SELECT to_regclass('schema_migrations')").fetchone() == (None,)


def test_unreachable_server_is_a_clear_open_error(tmp_path: Path):
    """No server on the socket: StoreOpenError within the connect timeout, no traceback."""
    with pytest.raises(StoreOpenError, match="cannot connect"):
        PostgresStore(f"postgresql:///x?host={tmp_path}&port=1", connect_timeout_s=1)


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param({"P": ((-1.0, 0.0), (0.0, 0.0009))}, id="negative-P00"),
        pytest.param({"P": ((0.4, 0.5), (-0.5, 0.0009))}, id="asymmetric"),
        pytest.param({"P": ((1.0, 2.0), (2.0, 1.0))}, id="not-positive-definite"),
        pytest.param({"P": ((math.nan, 0.0), (0.0, 0.0009))}, id="nan-P00"),
        pytest.param({"x": (math.nan, 0.0)}, id="nan-weight"),
        pytest.param({"x": (-80.0, 0.0)}, id="negative-weight"),
    ],
)
def test_constraints_refuse_invalid_state(postgres_backend: Backend, bad: dict):
    """I4/I5: CHECK constraints refuse a NaN or non-PD state even with validation bypassed."""
    s = postgres_backend.open()
    good = state("u1")
    broken = replace(good, kalman=replace(good.kalman, **bad))  # type: ignore[arg-type]
    unit = full_unit("u1")
    unit.states["u1"] = broken
    with pytest.raises(StorageError) as info:
        s.commit(unit)
    assert not isinstance(info.value, ConflictError)
    other = postgres_backend.reopen()
    assert other.load_state("u1") is None
    assert_nothing_of(unit, other)
    lg = UnitOfWork()
    lg.last_good["u1"] = (broken, day(1))
    with pytest.raises(StorageError):
        s.commit(lg)
    assert postgres_backend.reopen().last_good("u1") is None


def test_held_user_lock_is_busy_then_retry_commits(postgres_backend: Backend):
    """C2: another worker holding the user's row past lock_timeout: StoreBusyError, then retry."""
    base = postgres_backend.open()
    base.commit(full_unit("u1", version=1, expected=0))
    store = PostgresStore(postgres_backend.dsn, lock_timeout_ms=100)  # type: ignore[arg-type]
    postgres_backend.opened.append(store)
    blocker = psycopg.connect(postgres_backend.dsn, autocommit=False)  # type: ignore[arg-type]
    postgres_backend.opened.append(blocker)
    blocker.execute("SELECT * FROM user_states WHERE user_id = 'u1' FOR UPDATE")
    unit = full_unit("u1", version=2, expected=1, first_row=4, position=6, d=10)
    with pytest.raises(StoreBusyError) as info:
        store.commit(unit)
    assert info.value.retryable
    blocker.rollback()
    assert_nothing_of(unit, postgres_backend.reopen())
    store.commit(unit)
    assert postgres_backend.reopen().load_state("u1") == unit.states["u1"]


def test_text_with_nul_and_the_escape_round_trips(postgres_backend: Backend):
    """Text PostgreSQL cannot hold (NUL) and the escape character itself read back exactly."""
    store = postgres_backend.open()
    names = ["a\x00b", "\uffff0", "\uffff\x00\uffff1", "plain"]
    unit = UnitOfWork()
    for name in names:
        unit.put_state(state(name), 0)
    store.commit(unit)
    other = postgres_backend.reopen()
    assert other.users() == sorted(names)
    assert set(other.load_states(names)) == set(names)
    assert other.known_users(["a\x00b", "a"]) == {"a\x00b"}


def test_a_committed_unit_survives_the_pool_losing_its_connection(postgres_backend: Backend):
    """A connection killed by the server is replaced; the unit after it commits normally."""
    store = postgres_backend.open()
    store.commit(full_unit("u1", version=1, expected=0))
    raw = postgres_backend.raw()  # type: ignore[misc]
    raw.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE pid <> pg_backend_pid() AND datname = current_database() "
        "AND application_name = '' AND backend_type = 'client backend'"
    )
    unit = full_unit("u1", version=2, expected=1, first_row=4, position=6, d=10)
    for _ in range(3):  # a broken connection fails one call, typed; the pool replaces it
        try:
            store.commit(unit)
            break
        except StorageError as exc:
            assert not isinstance(exc, ConflictError)
    other = postgres_backend.reopen()
    assert other.load_state("u1") == unit.states["u1"]
    assert other.existing_keys(unit_keys(unit)) == set(unit_keys(unit))


def test_is_dsn_and_config():
    """Only postgresql:// and postgres:// URLs select PostgreSQL; a path never does."""
    assert is_dsn("postgresql://u@h/db") and is_dsn("postgres:///db?host=/tmp")
    assert not is_dsn("weightstream.db") and not is_dsn("/var/lib/postgresql/x.db")
    with pytest.raises(StoreOpenError):
        PostgresStore.from_config(StoreConfig())


# -- the CLI: the same results and the same stored rows as SQLite ------------------------------


def _sqlite_rows(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    conn = sqlite3.connect(path)
    try:
        # SQLite keeps a reading's result linked to the reading's row (migration 5): read
        # the results whole, through the view.
        return _tables(
            lambda sql: conn.execute(sql.replace("FROM results", "FROM results_full")).fetchall()
        )
    finally:
        conn.close()


def _tables(query: Any) -> dict[str, list[tuple[Any, ...]]]:
    """Every stored record (no row keys, no wall-clock columns), in a canonical order."""
    out = {}
    for table, drop in (
        (STATES, ()),
        (READINGS, ()),
        (RESULTS, ("input_ref",)),
        (AUDITS, ("duration_s", "at")),
        (RECOVERIES, ("at",)),
        (LAST_GOOD, ("taken_at",)),
    ):
        cols = ", ".join(n for n in table.names if n not in drop)
        rows = query(f"SELECT {cols} FROM {table.name}")
        out[table.name] = sorted(rows, key=repr)
    out["input_positions"] = sorted(query("SELECT input_id, position FROM input_positions"))
    return out


def test_cli_process_on_postgres_equals_sqlite(
    postgres_backend: Backend, synth_export: Any, tmp_path: Path, cli: Any
):
    """H5: `process --db postgresql://...` writes the same results file and rows as SQLite."""
    dsn = postgres_backend.dsn
    lite = cli("process", synth_export.path, "--db", tmp_path / "w.db", "--out", tmp_path / "s.csv")
    assert lite.returncode == 0, lite.stderr
    pg = cli("process", synth_export.path, "--db", dsn, "--out", tmp_path / "p.csv")
    assert pg.returncode == 0, pg.stderr
    assert (tmp_path / "p.csv").read_bytes() == (tmp_path / "s.csv").read_bytes()
    raw = postgres_backend.raw()  # type: ignore[misc]
    assert _tables(lambda sql: raw.execute(sql).fetchall()) == _sqlite_rows(tmp_path / "w.db")
    again = cli("process", synth_export.path, "--db", dsn, "--json")
    assert again.returncode == 0 and '"processed_now": 0' in again.stdout
    user = next(iter(raw.execute("SELECT min(user_id) FROM user_states").fetchone()))
    shown = cli("state", user, "--db", dsn)
    assert shown.returncode == 0, shown.stderr


def test_tiny_covariance_products_do_not_underflow(postgres_backend: Backend):
    """A P whose products underflow a double is checked in NUMERIC, as SQLite accepts it."""

    assert "p00::numeric * p11::numeric" in pg_ddl(STATES)
    store = postgres_backend.open()
    s = state("u1")
    tiny = replace(s, kalman=replace(s.kalman, P=((1.0, 2.2e-308), (2.2e-308, 2.0))))  # type: ignore[arg-type]
    unit = UnitOfWork()
    unit.put_state(tiny, 0)
    store.commit(unit)
    assert postgres_backend.reopen().load_state("u1") == tiny


def test_results_file_rows_decode_escaped_text(postgres_backend: Backend):
    """iter_result_rows gives NUL and U+FFFF in texts back exactly; other rows as stored."""
    from weightstream.model import Reason, Result, Verdict

    store = postgres_backend.open()
    odd = Result("id\x00x", "u\uffff1", Verdict.INVALID, Reason.NOT_A_NUMBER, "m\x00", row=1)
    plain = Result(None, None, Verdict.INVALID, Reason.NOT_A_NUMBER, "weight 'abc'", row=2)
    store.commit(UnitOfWork(results=[("in.csv", odd), ("in.csv", plain)]))
    rows = list(postgres_backend.reopen().iter_result_rows("in.csv"))  # type: ignore[attr-defined]
    assert [r[:3] for r in rows] == [(1, "id\x00x", "u\uffff1"), (2, "", "")]
    assert rows[0][5] == "m\x00" and rows[1][5] == "weight 'abc'"
    assert list(store.results_for_input("in.csv")) == [odd, plain]
