"""Concurrent writers (C2, C3) and the durability settings a store insists on (B4, I9).

C3: two ``weightstream process`` children write one SQLite file at the same time, from two
files that share some users' rows. Both must succeed (busy and conflicting groups are redone
by the pipeline, never shown to the user), each reading key must be stored once, and the end
state must equal processing the two files one after the other.

C2: a writer that holds the lock for the whole run makes the CLI fail with the typed,
retryable exit code 75 after bounded retries, leaving only whole groups; once the lock is
gone, a rerun is exactly-once.

Durability: a store on which WAL + synchronous=FULL cannot be set (``:memory:``, or a
connection monkeypatched to report synchronous=NORMAL) is refused unless
``allow_unsafe_durability`` is set.
"""

from __future__ import annotations

import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from weightstream.config import load_config
from weightstream.errors import StoreOpenError
from weightstream.ingest import file_digest
from weightstream.pipeline import process_file
from weightstream.store import sqlite as sqlite_store
from weightstream.store.sqlite import SQLiteStore
from weightstream.synth import write_stream

USERS, PER_USER, SEED = 16, 25, 11


def _split_by_user(src: Path, first: range, second: range, a: Path, b: Path) -> None:
    """Write the rows of users ``first`` to ``a`` and of users ``second`` to ``b``."""
    header, *lines = src.read_text(encoding="utf-8").splitlines(keepends=True)
    order: list[str] = []
    for line in lines:
        user = line.split(",")[1]
        if user not in order:
            order.append(user)
    assert len(order) == USERS
    for path, users in ((a, first), (b, second)):
        chosen = {order[i] for i in users}
        path.write_text(
            header + "".join(x for x in lines if x.split(",")[1] in chosen), encoding="utf-8"
        )


def _readings(store: SQLiteStore) -> list[tuple[Any, ...]]:
    """Stored readings without the arrival sequence number, by key."""
    return sorted(
        tuple(r)
        for r in store.connection.execute(
            "SELECT key, content_key, user_id, ts, value, unit, weight_kg, source, verdict, "
            "reason, message, filtered_weight, trend_kg_week, std_kg, reset_type, "
            "reset_outcome, quality FROM readings"
        )
    )


@pytest.mark.crash
def test_two_writers_on_one_store_both_succeed_exactly_once(
    harness: Any, cli_pool: Any, tmp_path: Path
) -> None:
    """Two CLI writers with overlapping users at once: exit 0, each key once, as if in turn."""
    h = harness
    src = tmp_path / "all.csv"
    write_stream(USERS, PER_USER, SEED, src, None, scenario="mixed")
    file_a, file_b = tmp_path / "a.csv", tmp_path / "b.csv"
    _split_by_user(src, range(0, 10), range(6, 16), file_a, file_b)  # users 6-9 in both
    config_path = h.write_config(tmp_path / "config.toml", group=5)
    config = load_config(config_path)
    db = tmp_path / "shared.db"
    SQLiteStore(db).close()  # schema first, so both writers start on equal terms

    def run(name: str, path: Path) -> tuple[Any, float, float]:
        started = time.monotonic()
        done = cli_pool.run(
            "process", path, "--db", db, "--out", tmp_path / f"{name}.out.csv",
            "--config", config_path, "--json",
        )
        return done, started, time.monotonic()

    with ThreadPoolExecutor(2) as pool:
        fut_a, fut_b = pool.submit(run, "a", file_a), pool.submit(run, "b", file_b)
        (done_a, a0, a1), (done_b, b0, b1) = fut_a.result(), fut_b.result()
    overlap = min(a1, b1) - max(a0, b0)
    print(f"writers ran {a1 - a0:.2f} s and {b1 - b0:.2f} s, overlapping {overlap:.2f} s")
    for done in (done_a, done_b):
        assert done.returncode == 0, done.stderr
        assert "locked" not in (done.stdout + done.stderr).lower()
        print(done.stdout[done.stdout.find('"retries"'):][:20])

    # The same two files one after the other, in-process, into a fresh store.
    seq_db = tmp_path / "sequential.db"
    with SQLiteStore(seq_db) as store:
        process_file(file_a, store, config)
        process_file(file_b, store, config)

    rows_a = len(file_a.read_text().splitlines()) - 1
    rows_b = len(file_b.read_text().splitlines()) - 1
    with SQLiteStore(db, create=False) as live, SQLiteStore(seq_db, create=False) as seq:
        assert live.integrity_check() == "ok"
        keys = live.connection.execute("SELECT count(*), count(DISTINCT key) FROM readings")
        total, distinct = keys.fetchone()
        assert total == distinct
        res_a = list(live.results_for_input(file_digest(file_a)))
        res_b = list(live.results_for_input(file_digest(file_b)))
        assert (len(res_a), len(res_b)) == (rows_a, rows_b)
        stored = [r for r in res_a + res_b if str(r.verdict) not in ("duplicate", "invalid")]
        assert len(stored) == total  # every stored reading has exactly one live result
        assert _readings(live) == _readings(seq)
        states = h.table_rows(live, "SELECT * FROM user_states ORDER BY user_id")
        assert states == h.table_rows(seq, "SELECT * FROM user_states ORDER BY user_id")
    snap = h.snapshot(db, None, config)
    assert snap.integrity == "ok" and not snap.rebuild_mismatches


@pytest.mark.crash
def test_lock_held_past_busy_timeout_fails_typed_then_rerun_is_exact(
    harness: Any, cli_pool: Any, workload: Any, reference: Any, tmp_path: Path
) -> None:
    """A lock held for the whole run: exit 75 after bounded retries, then an exact rerun."""
    h, w = harness, workload
    config_path = h.write_config(tmp_path / "config.toml", extra="[store]\nbusy_timeout_ms = 50\n")
    db, out = tmp_path / "locked.db", tmp_path / "results.csv"
    SQLiteStore(db).close()
    holder = sqlite3.connect(db, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        done = cli_pool.run(
            "process", w.input, "--db", db, "--out", out, "--config", config_path
        )
        elapsed = time.monotonic() - started
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    print(f"gave up after {elapsed:.1f} s: {done.stderr.strip()}")
    assert done.returncode == 75, done.stderr
    assert "Traceback" not in done.stderr
    with SQLiteStore(db, create=False) as store:
        assert store.position(file_digest(w.input)) == 0
    rerun = cli_pool.run(*h.process_cmd(w, db, out))
    assert rerun.returncode == 0, rerun.stderr
    problems = h.snapshot(db, out, w.config).differences(reference)
    assert not problems, problems


def test_memory_database_is_refused_without_unsafe_durability() -> None:
    """``:memory:`` cannot do WAL: refused, unless allow_unsafe_durability is set."""
    with pytest.raises(StoreOpenError, match="durability"):
        SQLiteStore(":memory:")
    with SQLiteStore(":memory:", allow_unsafe_durability=True) as store:
        assert store.integrity_check() == "ok"


class _ReportsNormalSync:
    """A real connection that reports synchronous=NORMAL (1), as a weak mount or build might."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, *args: Any) -> Any:
        if sql.strip().upper() == "PRAGMA SYNCHRONOUS":
            return self._conn.execute("SELECT 1")
        return self._conn.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def test_weak_synchronous_is_refused_without_unsafe_durability(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A file store whose synchronous setting does not stick is refused unless allowed."""
    real_connect = sqlite3.connect
    monkeypatch.setattr(
        sqlite_store.sqlite3, "connect", lambda *a, **k: _ReportsNormalSync(real_connect(*a, **k))
    )
    with pytest.raises(StoreOpenError, match="synchronous=1"):
        SQLiteStore(tmp_path / "weak.db")
    with SQLiteStore(tmp_path / "weak.db", allow_unsafe_durability=True) as store:
        assert store.integrity_check() == "ok"
    monkeypatch.undo()
    with SQLiteStore(tmp_path / "weak.db") as store:  # the shipped settings, read back
        c = store.connection
        assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert c.execute("PRAGMA synchronous").fetchone()[0] == 2
