"""Time comes from the injected clock (issue 12): stored times and the retry back-off.

Nothing in the package reads the wall clock or sleeps except :mod:`weightstream.clock`, so a
:class:`~weightstream.testing.FakeClock` makes these tests exact and instant.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from weightstream.config import Config
from weightstream.errors import StoreBusyError
from weightstream.pipeline import process_file
from weightstream.store.base import UnitOfWork
from weightstream.store.sqlite import SQLiteStore
from weightstream.synth import write_stream
from weightstream.testing import FakeClock, FaultyStore


def test_fake_clock_sleep_advances_without_waiting() -> None:
    """``FakeClock.sleep`` returns at once with both clocks moved on."""
    clock = FakeClock()
    start = clock.now()
    clock.sleep(2.5)
    assert clock.monotonic() == 2.5
    assert (clock.now() - start).total_seconds() == 2.5


def test_stored_times_come_from_the_store_clock(tmp_path: Path) -> None:
    """Migrations and input positions are stamped with the injected clock's time."""
    clock = FakeClock()
    db = tmp_path / "ws.db"
    src = tmp_path / "export.csv"
    write_stream(2, 5, 3, src, None, scenario="mixed")
    with SQLiteStore(db, clock=clock) as store:
        process_file(src, store, Config(), clock=clock)
    expected = int(clock.now().timestamp()) * 1_000_000
    conn = sqlite3.connect(db)
    try:
        assert {t for (t,) in conn.execute("SELECT applied_at FROM schema_migrations")} == {
            expected}
        assert [t for (t,) in conn.execute("SELECT updated_at FROM input_positions")] == [
            expected]
    finally:
        conn.close()


def test_the_retry_backoff_sleeps_on_the_injected_clock(tmp_path: Path) -> None:
    """A busy store is retried after a back-off taken from the clock: a fake clock never waits."""
    clock = FakeClock()
    src = tmp_path / "export.csv"
    write_stream(2, 5, 3, src, None, scenario="mixed")
    with SQLiteStore(tmp_path / "ws.db") as inner:
        busy = FaultyStore(inner, StoreBusyError("locked"))
        calls = {"n": 0}

        def twice(unit: UnitOfWork) -> bool:
            calls["n"] += 1
            return calls["n"] <= 2

        busy.fail_when = twice
        summary = process_file(src, busy, Config(), clock=clock)  # type: ignore[arg-type]
    assert summary.retries == 2
    assert clock.monotonic() == pytest.approx(0.05 + 0.1)
