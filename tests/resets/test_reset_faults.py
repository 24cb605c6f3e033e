"""Fault injection at each reset operation and in the store, checked through a second connection.

Setup: a user with five daily readings on a SQLiteStore file; then a reading that triggers a
HARD (60-day gap) or SOFT (manual entry) reset while one named fault is injected.

* Faults inside a reset step (raising; NaN/inf; wrong shape; negative or asymmetric P; Q <= 0;
  factor out of range; buffer over its bound; a failure in STATE_PERSIST): the reading still
  gets a result (fallback to the last-known-good state); the stored row is byte-identical to
  what a fault-free processor writes when its breaker is open (so no half-applied reset ever
  reached the store); the persisted audit says rolled_back, names the step and the fault.
* Faults of the store itself (disk full via ``PRAGMA max_page_count``, 'database is locked'
  from another writer or forced at each statement of the unit): a StorageError reaches the
  caller and every table is byte-identical to before; once lifted, the same reading
  processes to exactly what a run that never saw the fault stores.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from weightstream import kalman
from weightstream.cli import app
from weightstream.config import Config, ResetConfig
from weightstream.errors import ResetError, StorageError, StorageFullError, StoreBusyError
from weightstream.faults import NO_FAULTS, FaultPoints
from weightstream.model import Measurement, ResetOutcome, ResetType, UserState, Verdict
from weightstream.processor import Batch, Processor
from weightstream.resets import sequence
from weightstream.resets.breaker import CircuitBreaker
from weightstream.resets.manager import ResetManager
from weightstream.resets.validator import StateValidator
from weightstream.store import codec
from weightstream.store.memory import MemoryStore
from weightstream.store.sqlite import SQLiteStore
from weightstream.testing import FAULTS, FakeClock, FaultyResetManager, measurement

HISTORY = [measurement(w, d) for d, w in enumerate((80.0, 80.2, 79.9, 80.1, 80.0))]
TRIGGERS = {
    ResetType.HARD: measurement(81.0, 64),  # 60 days after the last reading
    ResetType.SOFT: measurement(92.0, 5, source="questionnaire"),  # manual, 12 kg off (14 sigma)
}
NEXT = {ResetType.HARD: measurement(81.2, 65), ResetType.SOFT: measurement(83.0, 6)}

#: fault -> (failing operation, what the validator or the error must say)
EXPECTED = {
    "kalman_raises": ("kalman_reset", "RuntimeError: injected failure in kalman"),
    "kalman_nan": ("kalman_reset", "x contains NaN or inf"),
    "kalman_inf": ("kalman_reset", "P contains NaN or inf"),
    "kalman_wrong_shape": ("kalman_reset", "wrong shape"),
    "kalman_negative_p": ("kalman_reset", "P is not positive definite"),
    "kalman_asymmetric_p": ("kalman_reset", "P is not symmetric"),
    "noise_q_zero": ("kalman_reset", "process noise Q has a non-positive diagonal"),
    "noise_q_negative": ("kalman_reset", "process noise Q has a non-positive diagonal"),
    "adaptation_raises": ("adaptation_create", "RuntimeError: injected failure in adaptation"),
    "adaptation_factor_high": ("adaptation_create", "adaptation factor outside [1, 100]"),
    "adaptation_factor_low": ("adaptation_create", "adaptation factor outside [1, 100]"),
    "adaptation_negative_count": ("adaptation_create", "negative readings-since-reset count"),
    "buffer_raises": ("buffer_update", "RuntimeError: injected failure in buffer"),
    "buffer_oversized": ("buffer_update", "buffer exceeds its bound of 20"),
    "buffer_nan": ("buffer_update", "buffer holds a non-finite or non-positive weight"),
    "persist_raises": ("state_persist", "ChaosFault: chaos: injected failure in persist"),
    "persist_version_skip": ("state_persist", "state version does not go up by exactly one"),
}
assert set(FAULTS) <= set(EXPECTED)


# -- helpers -----------------------------------------------------------------------------------


def snapshot(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, read through a second, read-only connection."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        tables = [t for (t,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') ORDER BY name")]
        return {t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for t in tables}
    finally:
        conn.close()


def state_row(db: Path, user: str = "u1") -> tuple[Any, ...] | None:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        cols = ", ".join(codec.STATE_COLUMNS)
        return conn.execute(f"SELECT {cols} FROM user_states WHERE user_id = ?", (user,)).fetchone()
    finally:
        conn.close()


def stored_state(db: Path, user: str = "u1") -> UserState:
    row = state_row(db, user)
    assert row is not None
    return codec.row_to_state(row)


def comparable(snap: dict[str, list[tuple[Any, ...]]]) -> dict[str, list[tuple[Any, ...]]]:
    """A snapshot without the migration timestamps (which differ between two files)."""
    return {t: rows for t, rows in snap.items() if t != "schema_migrations"}


class World:
    """A processor over a SQLite file, with history already processed."""

    def __init__(self, path: Path, config: Config | None = None, busy_timeout_ms: int = 5000):
        self.db = path
        self.config = config or Config()
        self.store = SQLiteStore(path, busy_timeout_ms=busy_timeout_ms)
        self.manager = FaultyResetManager(self.config)
        self.clock = FakeClock()
        self.p = Processor(self.store, self.config, clock=self.clock, manager=self.manager)
        for m in HISTORY:
            assert self.p.process_one(m).accepted

    def close(self) -> None:
        self.store.close()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path / "ws.db")
    yield w
    w.close()


def inject(w: World, fault: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Arm ``fault`` for the next reset (manager faults, persist chaos or a skipped version)."""
    if fault in FAULTS:
        w.manager.fault, w.manager.remaining = fault, 1
    elif fault == "persist_raises":
        w.p.faults = FaultPoints(chaos={"persist": 1.0})
    elif fault == "persist_version_skip":
        real = sequence.reset_state
        calls = []

        def skip(*args: Any) -> UserState:
            new = real(*args)
            calls.append(1)
            if len(calls) > 1:  # once: the reference run later in the test is fault-free
                return new
            return UserState(**{**{f: getattr(new, f) for f in new.__slots__},  # type: ignore[attr-defined]
                                "version": new.version + 1})

        monkeypatch.setattr(sequence, "reset_state", skip)


def reference_fallback(tmp_path: Path, trigger: Measurement) -> Path:
    """The same history on a fault-free processor whose breaker is open: the fallback's row."""
    db = tmp_path / "reference.db"
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, clock=clock)
    with SQLiteStore(db) as store:
        p = Processor(store, Config(), clock=clock, breaker=breaker)
        for m in HISTORY:
            p.process_one(m)
        with pytest.raises(RuntimeError):
            breaker.call(_boom)
        result = p.process_one(trigger)
        assert result.reset_outcome is ResetOutcome.FALLBACK_LAST_GOOD
    return db


def _boom() -> None:
    raise RuntimeError("open the breaker")


# -- faults inside the reset steps ---------------------------------------------------------------


@pytest.mark.parametrize("reset_type", [ResetType.HARD, ResetType.SOFT])
@pytest.mark.parametrize("fault", sorted(EXPECTED))
def test_step_fault_rolls_back_and_falls_back(
    world: World, tmp_path: Path, fault: str, reset_type: ResetType,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A fault at any reset step leaves no trace of the reset: the row is exactly the fallback's, the audit says why."""
    trigger = TRIGGERS[reset_type]
    before = snapshot(world.db)
    old = stored_state(world.db)
    inject(world, fault, monkeypatch)

    result = world.p.process_one(trigger)
    world.p.faults = NO_FAULTS

    operation, why = EXPECTED[fault]
    assert world.manager.triggered == (1 if fault in FAULTS else 0)
    # the triggering reading still gets a stored result, from the last-known-good state
    assert result.reset_outcome is ResetOutcome.FALLBACK_LAST_GOOD
    assert result.verdict in (Verdict.ACCEPTED, Verdict.REJECTED)
    assert world.p.breaker.failure_count == 1
    # the persisted audit names the step and the fault
    audit = world.store.audits(user_id="u1", outcome="rolled_back")
    assert len(audit) == 1
    assert audit[0].failed_operation == operation
    assert audit[0].reason is not None and why in audit[0].reason
    assert audit[0].fallback is ResetOutcome.FALLBACK_LAST_GOOD
    assert audit[0].reset_type is reset_type
    # the stored state is valid, one version on, and byte-equal to the fallback's row
    new = stored_state(world.db)
    assert StateValidator().user_state_problems(new) == []
    assert new.version == old.version + 1
    assert new.last_reset_at == old.last_reset_at  # no reset happened, not even half of one
    assert new.adaptation.adaptation_start != trigger.timestamp  # not the reset's adaptation
    reference = reference_fallback(tmp_path, trigger)
    assert state_row(world.db) == state_row(reference)
    # no partial rows: only the reading, its result, the state and the rolled-back audit changed
    after = snapshot(world.db)
    assert after["last_good_states"] == before["last_good_states"]
    assert after["recovery_attempts"] == before["recovery_attempts"]
    for table in ("readings", "results", "reset_audit"):
        assert len(after[table]) == len(before[table]) + 1, table
    assert comparable(after) | {"reset_audit": []} == comparable(snapshot(reference)) | {
        "reset_audit": []
    }
    # and the next normal reading processes normally
    nxt = world.p.process_one(NEXT[reset_type])
    assert nxt.verdict is Verdict.ACCEPTED and nxt.reset_outcome is None
    assert stored_state(world.db).version == old.version + 2


def test_hard_fallback_is_a_plain_filter_step_from_the_old_state(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a failed HARD reset the stored filter is the ordinary update of the old state, not a restart."""
    old = stored_state(world.db)
    inject(world, "kalman_nan", monkeypatch)
    m = TRIGGERS[ResetType.HARD]
    world.p.process_one(m)
    assert old.kalman is not None
    mgr = ResetManager(world.config)
    dt = (m.timestamp - old.kalman.timestamp).total_seconds() / 86_400
    xp, Pp = kalman.predict(old.kalman.x, old.kalman.P, dt, *mgr.process_noise(old.adaptation))
    upd = kalman.update(xp, Pp, m.weight_kg, mgr.measurement_var(m.source))
    new = stored_state(world.db)
    assert new.kalman is not None
    assert (new.kalman.x, new.kalman.P) == (tuple(upd.x), tuple(map(tuple, upd.P)))
    assert new.kalman.P[0][0] < mgr.reset_covariance(ResetType.HARD)[0][0]


def test_a_reset_without_fault_commits_state_result_and_audit_together(world: World) -> None:
    """A fault-free reset writes the new state, its result and a committed audit in one commit."""
    before = snapshot(world.db)
    result = world.p.process_one(TRIGGERS[ResetType.HARD])
    assert result.reset_outcome is ResetOutcome.COMMITTED
    after = snapshot(world.db)
    for table in ("readings", "results", "reset_audit"):
        assert len(after[table]) == len(before[table]) + 1
    audit = world.store.audits(user_id="u1")[-1]
    assert (audit.outcome, audit.failed_operation) == ("committed", None)
    assert [op for op, ok in audit.checkpoints if ok] == [
        "kalman_reset", "adaptation_create", "buffer_update", "state_persist",
    ]
    assert stored_state(world.db).last_reset_at == TRIGGERS[ResetType.HARD].timestamp


# -- faults of the store itself --------------------------------------------------------------------


class LockedAt:
    """A connection that answers 'database is locked' at the first statement starting with ``prefix``."""

    def __init__(self, conn: sqlite3.Connection, prefix: str) -> None:
        self._conn, self.prefix, self.fired = conn, prefix, 0

    def _check(self, sql: str) -> None:
        if self.fired == 0 and sql.lstrip().startswith(self.prefix):
            self.fired += 1
            raise sqlite3.OperationalError("database is locked")

    def execute(self, sql: str, *args: Any) -> Any:
        self._check(sql)
        return self._conn.execute(sql, *args)

    def executemany(self, sql: str, *args: Any) -> Any:
        self._check(sql)
        return self._conn.executemany(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def fault_free_reference(tmp_path: Path, readings: list[Measurement]) -> dict[str, Any]:
    db = tmp_path / "clean.db"
    with SQLiteStore(db) as store:
        p = Processor(store, Config(), clock=FakeClock())
        for m in [*HISTORY, *readings]:
            p.process_one(m)
    return comparable(snapshot(db))


STATEMENTS = [
    "BEGIN IMMEDIATE",
    "INSERT INTO reading_rows",
    "INSERT INTO results",
    "UPDATE user_states",
    "INSERT OR REPLACE INTO last_good_states",
    "INSERT INTO reset_audit",
    "COMMIT",
]


@pytest.mark.parametrize("statement", STATEMENTS)
def test_locked_at_any_statement_of_the_unit_stores_nothing(
    world: World, tmp_path: Path, statement: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """'database is locked' at any statement of a reset's unit: typed error, every table unchanged, then a clean redo."""
    before = snapshot(world.db)
    proxy = LockedAt(world.store.connection, statement)
    monkeypatch.setattr(world.store, "_conn", proxy)
    trigger = TRIGGERS[ResetType.HARD]

    with pytest.raises(StoreBusyError) as info:
        world.p.process_one(trigger)
    assert not isinstance(info.value, ResetError)
    assert proxy.fired == 1
    assert snapshot(world.db) == before
    assert world.p.load_state("u1") == stored_state(world.db)  # no cached ghost of the unit

    result = world.p.process_one(trigger)  # the fault has fired once: lifted
    assert result.reset_outcome is ResetOutcome.COMMITTED
    assert world.p.process_one(NEXT[ResetType.HARD]).accepted
    assert comparable(snapshot(world.db)) == fault_free_reference(
        tmp_path, [trigger, NEXT[ResetType.HARD]]
    )


def test_another_writer_holding_the_lock_stores_nothing(tmp_path: Path) -> None:
    """A real second writer holding the lock: StoreBusyError, nothing stored; after release the reading commits."""
    w = World(tmp_path / "ws.db", busy_timeout_ms=0)
    try:
        before = snapshot(w.db)
        other = sqlite3.connect(w.db, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreBusyError, match="locked"):
            w.p.process_one(TRIGGERS[ResetType.HARD])
        other.execute("ROLLBACK")
        other.close()
        assert snapshot(w.db) == before
        assert w.p.process_one(TRIGGERS[ResetType.HARD]).reset_outcome is ResetOutcome.COMMITTED
        assert comparable(snapshot(w.db)) == fault_free_reference(
            tmp_path, [TRIGGERS[ResetType.HARD]]
        )
    finally:
        w.close()


class LongFault(ResetManager):
    """A buffer step failing with a long message, so the audit row needs a new page."""

    armed = False

    def buffer_after_reset(self, *args: Any, **kwargs: Any) -> Any:
        if self.armed:
            raise RuntimeError("buffer step failed: " + "x" * 20_000)
        return super().buffer_after_reset(*args, **kwargs)


def test_disk_full_at_the_audit_insert_after_a_failed_reset(tmp_path: Path) -> None:
    """Disk full at the last insert of a fallback unit (after four writes): StorageFullError, every table unchanged."""
    db = tmp_path / "ws.db"
    w = World(db)
    try:
        manager = LongFault(w.config)
        w.p.manager = manager
        before = snapshot(db)
        conn = w.store.connection
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")
        statements: list[str] = []
        conn.set_trace_callback(statements.append)
        manager.armed = True

        with pytest.raises(StorageFullError, match="storage full"):
            w.p.process_one(TRIGGERS[ResetType.HARD])
        conn.set_trace_callback(None)

        writes = [s.split("(")[0].strip() for s in statements
                  if s.startswith(("INSERT", "UPDATE"))]
        assert writes[-1] == "INSERT INTO reset_audit"  # the one that hit the limit
        assert len(writes) >= 4 and statements[-1] == "ROLLBACK"
        assert snapshot(db) == before

        conn.execute("PRAGMA max_page_count = 1073741823")
        manager.armed = False
        assert w.p.process_one(TRIGGERS[ResetType.HARD]).reset_outcome is ResetOutcome.COMMITTED
        assert comparable(snapshot(db)) == fault_free_reference(tmp_path, [TRIGGERS[ResetType.HARD]])
    finally:
        w.close()


def test_disk_full_mid_group_commit_stores_nothing_of_the_batch(world: World, tmp_path: Path) -> None:
    """Disk full part-way through a group commit of many resets: nothing of the batch is stored; rerun is exact."""
    readings = [TRIGGERS[ResetType.HARD]] + [measurement(70.0 + i, 0, user=f"n{i:02d}") for i in range(40)]
    before = snapshot(world.db)
    conn = world.store.connection
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")

    batch = Batch(world.p, input_id="file.csv")
    batch.prefetch(readings)
    for m in readings:
        batch.process(m)
    with pytest.raises(StorageFullError):
        batch.commit(position=("file.csv", len(readings)))
    assert snapshot(world.db) == before
    assert world.store.position("file.csv") == 0

    conn.execute("PRAGMA max_page_count = 1073741823")
    batch = Batch(world.p, input_id="file.csv")
    batch.prefetch(readings)
    results = [batch.process(m) for m in readings]
    batch.commit(position=("file.csv", len(readings)))
    assert all(r.reset_outcome is ResetOutcome.COMMITTED for r in results)
    assert world.store.position("file.csv") == len(readings)
    assert len(world.store.audits(outcome="committed")) == 1 + len(readings)


# -- the feature flag ----------------------------------------------------------------------------


def _plain(config: Config | None = None) -> Config:
    return Config(resets=ResetConfig(transactional=False))


@pytest.mark.parametrize("transactional", [True, False])
def test_the_flag_decides_whether_a_corrupt_reset_is_stored(transactional: bool) -> None:
    """With the flag on a NaN reset is refused and falls back; off, the plain sequence stores the NaN state."""
    config = Config(resets=ResetConfig(transactional=transactional))
    store = MemoryStore()
    manager = FaultyResetManager(config)
    p = Processor(store, config, clock=FakeClock(), manager=manager)
    for m in HISTORY:
        p.process_one(m)
    manager.fault = "kalman_nan"
    result = p.process_one(TRIGGERS[ResetType.HARD])
    stored = store.load_state("u1")
    assert stored is not None
    problems = StateValidator().user_state_problems(stored)
    if transactional:
        assert result.reset_outcome is ResetOutcome.FALLBACK_LAST_GOOD
        assert problems == []
        assert store.audits()[-1].failed_operation == "kalman_reset"
    else:
        assert result.reset_outcome is ResetOutcome.COMMITTED
        assert "x contains NaN or inf" in problems
        assert store.audits()[-1].outcome == "committed"


def test_flag_off_on_sqlite_a_corrupt_reset_is_not_acknowledged(tmp_path: Path) -> None:
    """Flag off, only the schema's CHECK stops a NaN reset: the reading gets no result (StorageError)."""
    config = _plain()
    with SQLiteStore(tmp_path / "ws.db") as store:
        manager = FaultyResetManager(config)
        p = Processor(store, config, clock=FakeClock(), manager=manager)
        for m in HISTORY:
            p.process_one(m)
        before = snapshot(tmp_path / "ws.db")
        manager.fault = "kalman_nan"
        with pytest.raises(StorageError):
            p.process_one(TRIGGERS[ResetType.HARD])
        assert snapshot(tmp_path / "ws.db") == before


def test_flag_off_a_raising_step_still_falls_back_but_names_no_step() -> None:
    """Flag off, a raising step still falls back, but the audit cannot say which step failed."""
    config = _plain()
    store = MemoryStore()
    manager = FaultyResetManager(config)
    p = Processor(store, config, clock=FakeClock(), manager=manager)
    for m in HISTORY:
        p.process_one(m)
    manager.fault = "adaptation_raises"
    result = p.process_one(TRIGGERS[ResetType.HARD])
    assert result.reset_outcome is ResetOutcome.FALLBACK_LAST_GOOD
    audit = store.audits()[-1]
    assert audit.outcome == "rolled_back" and audit.failed_operation is None


# -- the audit on the command line --------------------------------------------------------------


def test_cli_lists_audit_records_by_user_and_outcome(tmp_path: Path) -> None:
    """`weightstream resets --user --outcome` lists the persisted audit records that match."""
    db = tmp_path / "ws.db"
    w = World(db)
    try:
        w.p.process_one(measurement(70.0, 0, user="u2"))
        w.manager.fault = "buffer_oversized"
        w.p.process_one(TRIGGERS[ResetType.HARD])
    finally:
        w.close()
    runner = CliRunner()

    def listed(*args: str) -> list[dict[str, Any]]:
        out = runner.invoke(app, ["resets", "--db", str(db), "--json", *args])
        assert out.exit_code == 0, out.output
        return json.loads(out.output)  # type: ignore[no-any-return]

    assert len(listed()) == 3
    assert [a["user_id"] for a in listed("--user", "u2")] == ["u2"]
    failed = listed("--outcome", "rolled_back")
    assert len(failed) == 1
    assert failed[0]["failed_operation"] == "buffer_update"
    assert "buffer exceeds its bound" in failed[0]["reason"]
    assert failed[0]["fallback"] == "fallback_last_good"
    assert listed("--user", "u2", "--outcome", "rolled_back") == []
    table = runner.invoke(app, ["resets", "--db", str(db), "--user", "u1"], env={"COLUMNS": "250"})
    assert table.exit_code == 0 and "2 reset transactions" in table.output
