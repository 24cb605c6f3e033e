"""The WAL is copied into the database by a thread of its own, never inside a commit, and the
log stays bounded while commits keep coming."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from weightstream.config import Config, StoreConfig
from weightstream.store.checkpointer import Checkpointer
from weightstream.store.sqlite import SQLiteStore

PAGE = 4096
RESTART_PAGES = 40


def _writer(path: Path) -> sqlite3.Connection:
    """A writer as the store's is with the thread on: WAL, FULL, no checkpoint of its own."""
    c = sqlite3.connect(path, isolation_level=None)
    c.execute("PRAGMA journal_mode = WAL")
    c.execute("PRAGMA synchronous = FULL")
    c.execute("PRAGMA wal_autocheckpoint = 0")
    c.execute("CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY, v BLOB)")
    return c


def _commit_steadily(c: sqlite3.Connection, commits: int, cp: Checkpointer | None) -> None:
    """``commits`` small commits back to back (about two pages each), each followed by the
    checkpointer's ``after_commit`` as the store does.

    Every tenth commit, the checkpointer's round runs while that commit is open, as the
    thread's rounds overlap a busy writer's commits: the round copies what was committed
    before, and the commit then adds to the log, so the log is never wholly copied when the
    next transaction starts and never starts over by itself. Run here, at a fixed pace, the
    log's size does not depend on how a loaded machine schedules the thread.
    """
    for k in range(commits):
        if cp is not None and k % 10 == 9:
            c.execute("BEGIN IMMEDIATE")
            c.execute("INSERT INTO t (v) VALUES (randomblob(3000))")
            cp.checkpoint()
            c.execute("COMMIT")
        else:
            c.execute("INSERT INTO t (v) VALUES (randomblob(3000))")
        if cp is not None:
            cp.after_commit(c)


def _wal_bytes(path: Path) -> int:
    wal = Path(f"{path}-wal")
    return wal.stat().st_size if wal.exists() else 0


def test_the_log_stays_bounded_while_commits_keep_coming(tmp_path: Path) -> None:
    """With the checkpointer, the log restarts and its file stays near ``restart_pages``;
    without it (the negative control), the same commits grow it past that many times over."""
    bound = 8 * RESTART_PAGES * PAGE
    commits = 1_500

    alone = tmp_path / "alone.db"
    c = _writer(alone)
    _commit_steadily(c, commits, None)
    grown = _wal_bytes(alone)  # measured open: the last connection to close removes the log
    c.close()
    assert grown > bound, f"{commits} commits did not outgrow the bound"

    path = tmp_path / "checkpointed.db"
    c = _writer(path)
    cp = Checkpointer(path, restart_pages=RESTART_PAGES, interval_s=3600)  # rounds run here
    try:
        _commit_steadily(c, commits, cp)
    finally:
        cp.close()
    assert cp.passive >= cp.restarts > 0
    assert _wal_bytes(path) <= bound, f"log grew to {_wal_bytes(path)} bytes in {commits}"
    assert c.execute("SELECT count(*) FROM t").fetchone()[0] == commits
    c.close()


def test_checkpointed_commits_are_in_the_database_file(tmp_path: Path) -> None:
    """After a round, what was committed is in the database file itself: a copy of the
    file alone, without its log, holds every row."""
    path = tmp_path / "ws.db"
    c = _writer(path)
    for _ in range(50):
        c.execute("INSERT INTO t (v) VALUES (randomblob(100))")
    cp = Checkpointer(path, restart_pages=10_000, interval_s=60)
    try:
        log, copied = cp.checkpoint()
    finally:
        cp.close()
    assert log == copied > 0
    copy = tmp_path / "copy.db"
    copy.write_bytes(path.read_bytes())
    assert sqlite3.connect(copy).execute("SELECT count(*) FROM t").fetchone()[0] == 50
    c.close()


def test_a_long_read_holds_up_neither_commits_nor_the_thread(tmp_path: Path) -> None:
    """A reader on an old snapshot keeps the log from starting over; commits and checkpoints
    go on meanwhile, and the log starts over once the reader is done."""
    path = tmp_path / "ws.db"
    c = _writer(path)
    c.execute("INSERT INTO t (v) VALUES (randomblob(3000))")
    reader = sqlite3.connect(path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM t").fetchone()  # holds its snapshot
    cp = Checkpointer(path, restart_pages=1, interval_s=0.005)
    try:
        slowest = 0.0
        for _ in range(200):
            started = time.monotonic()
            c.execute("INSERT INTO t (v) VALUES (randomblob(3000))")
            cp.after_commit(c)
            slowest = max(slowest, time.monotonic() - started)
        assert cp.restarts == 0  # the reader still reads the log
        reader.execute("COMMIT")
        deadline = time.monotonic() + 10
        while cp.restarts == 0 and time.monotonic() < deadline:
            c.execute("INSERT INTO t (v) VALUES (randomblob(3000))")
            cp.after_commit(c)
            time.sleep(0.005)
    finally:
        cp.close()
        reader.close()
    assert slowest < 1.0, f"a commit waited {slowest:.2f} s behind a checkpoint"
    assert cp.restarts > 0 and cp.passive > 0
    c.close()


def test_the_store_opened_as_configured_leaves_checkpoints_to_its_thread(tmp_path: Path) -> None:
    """The CLI's and the service's store (store.background_checkpoint, on by default): the
    writer's automatic checkpoint is off, the thread runs until the store is closed."""
    assert StoreConfig().background_checkpoint
    store = SQLiteStore.from_config(Config().store, tmp_path / "ws.db")
    try:
        assert store.connection.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        assert any(t.name == "ws-checkpoint" for t in threading.enumerate())
    finally:
        store.close()
    assert not any(t.name == "ws-checkpoint" and t.is_alive() for t in threading.enumerate())


@pytest.mark.parametrize("pages", [100, 2500])
def test_without_the_thread_sqlite_checkpoints_in_the_commit(tmp_path: Path, pages: int) -> None:
    config = StoreConfig(background_checkpoint=False, wal_autocheckpoint_pages=pages)
    before = {t.ident for t in threading.enumerate()}
    store = SQLiteStore.from_config(config, tmp_path / "ws.db")
    try:
        assert store.connection.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == pages
        assert {t.ident for t in threading.enumerate()} == before
    finally:
        store.close()


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="restart_pages"):
        Checkpointer(tmp_path / "x.db", restart_pages=0)


def test_a_failing_checkpoint_is_logged_once_a_streak(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A checkpoint that fails round after round (a full disk) logs one warning, and one more
    once it works again; the thread goes on trying."""
    path = tmp_path / "ws.db"
    _writer(path).close()
    failures = {"left": 6}
    real = Checkpointer.checkpoint

    def flaky(self: Checkpointer) -> tuple[int, int]:
        if failures["left"] > 0:
            failures["left"] -= 1
            raise sqlite3.OperationalError("database or disk is full")
        return real(self)

    monkeypatch.setattr(Checkpointer, "checkpoint", flaky)
    caplog.set_level("WARNING", logger="weightstream.store.checkpointer")
    cp = Checkpointer(path, restart_pages=10, interval_s=0.002)
    try:
        deadline = time.monotonic() + 10
        while cp.passive < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        cp.close()
    assert failures["left"] == 0 and cp.passive >= 3
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["WAL checkpoints failing: OperationalError", "WAL checkpoints work again"]


def test_each_round_reaches_the_metrics(tmp_path: Path) -> None:
    """The store's observer hears of every round: the metrics count them and show the log."""
    from weightstream.metrics import MetricsObserver, read_counters

    observer = MetricsObserver()
    store = SQLiteStore(tmp_path / "ws.db", background_checkpoint=True, observer=observer)
    try:
        text = observer.render().decode()
        assert read_counters(text)[
            ("weightstream_wal_checkpoints_total", frozenset({("result", "failed")}))
        ] == 0
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            counters = read_counters(observer.render().decode())
            if counters[("weightstream_wal_checkpoints_total", frozenset({("result", "ok")}))]:
                break
            time.sleep(0.05)
    finally:
        store.close()
    text = observer.render().decode()
    counters = read_counters(text)
    assert counters[("weightstream_wal_checkpoints_total", frozenset({("result", "ok")}))] >= 1
    assert "weightstream_wal_pages " in text
