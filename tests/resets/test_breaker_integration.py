"""The reset circuit breaker inside the processor (RELIABILITY.md D1, D2, I3, I8).

Resets are made to fail with FaultyResetManager; time is a FakeClock, so the breaker's
timeout is crossed with ``advance`` and nothing sleeps. Resets are triggered by a user's first
reading (initial) and by gaps of 30 days or more (hard).
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from weightstream.config import BreakerConfig, Config
from weightstream.model import (
    KalmanState,
    Measurement,
    Reason,
    ResetOutcome,
    ResetType,
    Verdict,
)
from weightstream.pipeline import process_file
from weightstream.processor import Batch, Processor
from weightstream.resets.breaker import CircuitState
from weightstream.resets.validator import StateValidator
from weightstream.store.sqlite import SQLiteStore
from weightstream.testing import FakeClock, FaultyResetManager, MemoryStore, measurement

CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN
VALIDATOR = StateValidator()
GAP = 31.0  # days: every reading this far after the previous one triggers a hard reset


class CountingManager(FaultyResetManager):
    """A FaultyResetManager that also counts how often a reset is attempted at all."""

    def __init__(self, config: Config, fault: str | None = None, times: int | None = None):
        super().__init__(config, fault, times)
        self.attempts = 0

    def apply_reset(self, kalman_state: KalmanState | None, reset_type: ResetType,
                    measurement: Measurement) -> KalmanState:
        self.attempts += 1
        return super().apply_reset(kalman_state, reset_type, measurement)


def config(threshold: int = 3, timeout: float = 60.0, successes: int = 2) -> Config:
    return Config(breaker=BreakerConfig(failure_threshold=threshold, timeout_s=timeout,
                                        success_threshold=successes))


def setup(cfg: Config, fault: str | None = "kalman_raises", times: int | None = None,
          store: object | None = None) -> tuple[Processor, CountingManager, FakeClock]:
    clock = FakeClock()
    manager = CountingManager(cfg, fault, times)
    p = Processor(store or MemoryStore(), cfg, clock=clock, manager=manager)  # type: ignore[arg-type]
    return p, manager, clock


class Timeline:
    """Readings for one user, days apart; ``gap()`` makes the next one trigger a hard reset."""

    def __init__(self, user: str = "u1") -> None:
        self.user, self.day, self.n = user, 0.0, 0

    def next(self, weight: float | None = None, days: float = 1.0) -> Measurement:
        self.day += days
        self.n += 1
        return measurement(weight if weight is not None else 80.0 + 0.1 * (self.n % 3),
                           self.day, user=self.user)

    def gap(self) -> Measurement:
        return self.next(days=GAP)


def baseline(p: Processor, t: Timeline, n: int = 4) -> None:
    """A healthy start: the first reading's initial reset works, then plain filter steps."""
    manager = p.manager
    p.manager = FaultyResetManager(p.config)
    for _ in range(n):
        assert p.process_one(t.next()).verdict is Verdict.ACCEPTED
    p.manager = manager


# -- D1: open after the threshold, refuse while open, fall back ----------------------------


@pytest.mark.parametrize("threshold", [1, 3, 5])
def test_breaker_opens_exactly_at_the_failure_threshold(threshold: int) -> None:
    """Failed resets 1..threshold-1 leave the breaker CLOSED; failure `threshold` opens it."""
    p, manager, _ = setup(config(threshold))
    t = Timeline()
    baseline(p, t)
    for i in range(1, threshold + 1):
        result = p.process_one(t.gap())
        assert result.reset_outcome is ResetOutcome.FALLBACK_LAST_GOOD
        assert manager.attempts == i
        assert p.breaker.failure_count == (i if i < threshold else threshold)
        assert p.breaker.state is (OPEN if i == threshold else CLOSED)
    assert [a.outcome for a in p.store.audits("u1")][-threshold:] == ["rolled_back"] * threshold


def test_while_open_no_reset_is_attempted_and_processing_goes_on() -> None:
    """OPEN: the manager is never called, the audit says breaker_open, every reading is stored
    once on the last-known-good path with a valid state."""
    p, manager, _ = setup(config(3))
    t = Timeline()
    baseline(p, t)
    for _ in range(3):
        p.process_one(t.gap())
    assert p.breaker.state is OPEN
    attempts, triggered = manager.attempts, manager.triggered
    refused = []
    for _ in range(6):
        m = t.gap()
        before = p.store.load_state("u1")
        result = p.process_one(m)
        refused.append(m)
        assert result.reading_id == m.reading_id
        assert result.reset_outcome is ResetOutcome.FALLBACK_LAST_GOOD
        after = p.store.load_state("u1")
        assert VALIDATOR.user_state_problems(after) == []
        assert after.version == before.version + 1
        assert after.last_event_at == m.timestamp
        # plain filter steps between the gaps still work while the breaker is open
        assert p.process_one(t.next()).verdict is Verdict.ACCEPTED
    assert (manager.attempts, manager.triggered) == (attempts, triggered)
    assert p.breaker.total_rejections == 6
    audits = {a.reading_id: a for a in p.store.audits("u1", outcome="breaker_open")}
    assert sorted(audits) == sorted(m.reading_id for m in refused)
    assert all(a.fallback is ResetOutcome.FALLBACK_LAST_GOOD and a.checkpoints == ()
               for a in audits.values())
    keys = [row.measurement.reading_id for row in p.store.history("u1")]
    assert len(keys) == len(set(keys)) == t.n


def test_new_users_while_open_get_the_conservative_state() -> None:
    """A first reading while OPEN has no last-good state: recovery gives a valid state, and
    its attempts are stored with the reading."""
    p, manager, _ = setup(config(2))
    for u in ("a", "b"):
        p.process_one(measurement(70.0, 0.0, user=u))
    assert p.breaker.state is OPEN and manager.attempts == 2
    for u in ("c", "d", "e"):
        m = measurement(90.0, 0.0, user=u)
        result = p.process_one(m)
        assert result.verdict is Verdict.ACCEPTED
        assert result.reset_outcome is ResetOutcome.CONSERVATIVE
        state = p.store.load_state(u)
        assert VALIDATOR.user_state_problems(state) == []
        assert state.kalman.x == (90.0, 0.0)
        assert [a.strategy for a in p.store.recovery_attempts(u)] == [
            "history", "interpolation", "conservative"]
        assert p.store.audits(u)[0].outcome == "breaker_open"
    assert manager.attempts == 2


def test_every_input_row_gets_exactly_one_result_while_resets_fail(tmp_path: Path) -> None:
    """A whole file with failing resets (many users, gaps, duplicates, invalid rows): one
    result per row, each stored reading once, the breaker open, the database sound."""
    lines = ["id,user_id,timestamp,source_type,weight,unit"]
    start = datetime(2024, 1, 1, 8, tzinfo=UTC)
    expected_readings = 0
    for u in range(6):
        day = 0.0
        for i in range(8):
            day += GAP if i in (3, 6) else 1.0
            when = (start + timedelta(days=day)).strftime("%Y-%m-%d %H:%M:%S")
            lines.append(f"r{u}-{i},user{u},{when},patient-device,{70 + u + 0.1 * (i % 2)},kg")
            expected_readings += 1
        lines.append(f"r{u}-1,user{u},{when},patient-device,71.0,kg")  # same key again
        lines.append(f"bad{u},user{u},{when},patient-device,nan,kg")
        lines.append(f"neg{u},user{u},{when},patient-device,-3,kg")
    path = tmp_path / "export.csv"
    path.write_text("\n".join(lines) + "\n")
    cfg = config(3)
    store = SQLiteStore(tmp_path / "ws.db")
    clock = FakeClock(start=datetime(2026, 1, 1, tzinfo=UTC))
    manager = CountingManager(cfg, "kalman_raises")
    p = Processor(store, cfg, clock=clock, manager=manager)
    summary = process_file(path, store, cfg, clock=clock, processor=p)
    results = list(store.results_for_input(summary.input_id))
    rows = [r.row for r in results]
    assert len(results) == summary.rows == len(lines) - 1
    assert len(set(rows)) == len(rows) == sorted(rows)[-1] - 1  # lines 2..n, each once
    verdicts = Counter(str(r.verdict) for r in results)
    assert verdicts["duplicate"] == 6 and verdicts["invalid"] == 12
    history = [row for u in range(6) for row in store.history(f"user{u}")]
    keys = [row.measurement.reading_id for row in history]
    assert len(keys) == len(set(keys)) == expected_readings
    assert manager.attempts == 3 and p.breaker.state is OPEN
    outcomes = Counter(a.outcome for a in store.audits())
    assert outcomes == {"rolled_back": 3, "breaker_open": 6 * 3 - 3}
    for u in range(6):
        assert VALIDATOR.user_state_problems(store.load_state(f"user{u}")) == []
    assert store.integrity_check() == "ok"
    store.close()


def test_batched_fallbacks_commit_together(tmp_path: Path) -> None:
    """In one group commit, fallbacks of several users land with their results and audits."""
    store = SQLiteStore(tmp_path / "batch.db")
    cfg = config(1)
    p, manager, _ = setup(cfg, store=store)
    t1, t2 = Timeline("a"), Timeline("b")
    baseline(p, t1)
    baseline(p, t2)
    n_audits = len(store.audits())
    batch = Batch(p, "input-1")
    readings = [t1.gap(), t2.gap(), t1.next(), t2.gap()]
    for row, m in enumerate(readings):
        batch.process(m, row=row)
    assert len(store.audits()) == n_audits  # nothing durable before the group commits
    assert store.existing_keys([(m.user_id, m.reading_id) for m in readings]) == set()
    batch.commit(position=("input-1", len(readings)))
    results = list(store.results_for_input("input-1"))
    assert [r.reading_id for r in results] == [m.reading_id for m in readings]
    assert [r.reset_outcome for r in results] == [
        ResetOutcome.FALLBACK_LAST_GOOD, ResetOutcome.FALLBACK_LAST_GOOD, None,
        ResetOutcome.FALLBACK_LAST_GOOD]
    assert [a.outcome for a in store.audits()[n_audits:]] == [
        "rolled_back", "breaker_open", "breaker_open"]
    assert manager.attempts == 1
    assert store.position("input-1") == 4
    for u, last in (("a", readings[2]), ("b", readings[3])):
        state = store.load_state(u)
        assert VALIDATOR.user_state_problems(state) == []
        assert state.last_event_at == last.timestamp
    store.close()


# -- I8: after the timeout the breaker closes again on real resets -------------------------


def test_breaker_closes_again_once_resets_work_after_the_timeout() -> None:
    """The fault stops after `threshold` firings; before the timeout resets stay refused, after
    it success_threshold probes commit real resets and the breaker is CLOSED again."""
    cfg = config(threshold=3, timeout=60.0, successes=2)
    p, manager, clock = setup(cfg, times=3)
    t = Timeline()
    baseline(p, t)
    for _ in range(3):
        p.process_one(t.gap())
    assert p.breaker.state is OPEN and manager.remaining == 0
    clock.advance(59.0)
    assert p.process_one(t.gap()).reset_outcome is ResetOutcome.FALLBACK_LAST_GOOD
    assert manager.attempts == 3
    clock.advance(1.0)
    first = p.process_one(t.gap())
    assert (first.reset_type, first.reset_outcome) == (ResetType.HARD, ResetOutcome.COMMITTED)
    assert p.breaker.state is HALF_OPEN
    second = p.process_one(t.gap())
    assert second.reset_outcome is ResetOutcome.COMMITTED
    assert p.breaker.state is CLOSED and p.breaker.failure_count == 0
    assert manager.attempts == 5
    third = p.process_one(t.gap())  # and it stays closed on ordinary traffic
    assert third.reset_outcome is ResetOutcome.COMMITTED and p.breaker.state is CLOSED
    assert [a.outcome for a in p.store.audits("u1")][-3:] == ["committed"] * 3
    state = p.store.load_state("u1")
    assert state.last_reset_type is ResetType.HARD and state.last_reset_at == state.last_event_at


def test_a_failed_probe_reopens_with_a_fresh_timeout_and_is_never_stuck() -> None:
    """One more failure than the threshold: the first probe fails and re-opens the breaker;
    after a second full timeout it recovers."""
    p, manager, clock = setup(config(threshold=2, timeout=30.0, successes=1), times=3)
    t = Timeline()
    baseline(p, t)
    p.process_one(t.gap())
    p.process_one(t.gap())
    assert p.breaker.state is OPEN
    clock.advance(30.0)
    probe = p.process_one(t.gap())
    assert probe.reset_outcome is ResetOutcome.FALLBACK_LAST_GOOD and manager.attempts == 3
    assert p.breaker.state is OPEN
    clock.advance(29.0)
    p.process_one(t.gap())
    assert manager.attempts == 3  # still inside the fresh timeout
    clock.advance(1.0)
    assert p.process_one(t.gap()).reset_outcome is ResetOutcome.COMMITTED
    assert p.breaker.state is CLOSED and manager.attempts == 4


# -- D2: rejected and invalid readings are not breaker failures -----------------------------


def test_rejected_readings_neither_count_nor_clear_breaker_failures() -> None:
    """Outliers, unit errors and an implausible gap reading change no breaker count; the next
    real reset failure is the one that opens it."""
    p, manager, _ = setup(config(3))
    t = Timeline()
    baseline(p, t)
    p.process_one(t.gap())
    p.process_one(t.gap())
    assert (p.breaker.failure_count, p.breaker.state) == (2, CLOSED)
    snapshot = p.breaker.snapshot()
    rejected = [
        (t.next(120.0), {Reason.INNOVATION_OUTLIER, Reason.RATE_OF_CHANGE}),
        (t.next(80.0 * 2.20462), {Reason.PROBABLE_UNIT_ERROR}),
        (t.next(80.0 / 2.20462), {Reason.PROBABLE_UNIT_ERROR}),
        (t.next(130.0, days=GAP), {Reason.IMPLAUSIBLE_RESET}),  # gap reset refused by its rules
    ]
    for m, reasons in rejected:
        result = p.process_one(m)
        assert result.verdict is Verdict.REJECTED and result.reason in reasons, result
    assert p.breaker.snapshot() == snapshot
    assert manager.attempts == 2
    p.process_one(t.gap())
    assert p.breaker.state is OPEN


def test_invalid_rows_in_a_file_are_not_breaker_failures(tmp_path: Path) -> None:
    """Unusable rows become `invalid` results without touching the breaker or the manager."""
    lines = ["id,user_id,timestamp,source_type,weight,unit",
             "ok1,u1,2025-01-01 08:00:00,patient-device,80.0,kg"]
    bad = ["nan", "inf", "1e309", "abc", "-3", "0", "27.1"]
    units = ["kg"] * 6 + ["kg/m2"]
    for i, (value, unit) in enumerate(zip(bad, units, strict=True)):
        lines.append(f"bad{i},u1,2025-01-{2 + i:02d} 08:00:00,patient-device,{value},{unit}")
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(lines) + "\n")
    cfg = config(1)
    store = MemoryStore()
    clock = FakeClock(start=datetime(2026, 1, 1, tzinfo=UTC))
    manager = CountingManager(cfg, None)
    p = Processor(store, cfg, clock=clock, manager=manager)
    summary = process_file(path, store, cfg, clock=clock, processor=p)
    assert summary.verdicts["invalid"] == len(bad)
    assert summary.verdicts["accepted"] == 1
    assert manager.attempts == 1  # the first reading's initial reset, which succeeded
    assert p.breaker.snapshot().total_failures == 0
    assert p.breaker.state is CLOSED


def test_a_store_outage_during_a_reset_is_not_a_breaker_failure():
    """Disk full while persisting a reset reaches the caller as itself; the breaker counts nothing."""
    from weightstream.errors import StorageFullError
    from weightstream.processor import Processor
    from weightstream.testing import FakeClock, FaultyStore, MemoryStore, measurement

    inner = MemoryStore()
    store = FaultyStore(inner, StorageFullError("storage full"), fail_when=lambda unit: bool(unit.audits))
    store.armed = False
    p = Processor(store, clock=FakeClock())
    first = p.process_one(measurement(80.0, 0))
    assert first.reset_outcome is not None
    store.armed = True
    for attempt in range(5):
        with pytest.raises(StorageFullError):
            p.process_one(measurement(80.0, 40 + attempt))  # a gap: HARD reset, cannot persist
    assert p.breaker.failure_count == 0
    assert str(p.breaker.state) == "closed"
    assert inner.load_state("u1").version == 1  # nothing of the failed units stored
    store.armed = False
    assert p.process_one(measurement(80.0, 50)).reset_outcome.value == "committed"
