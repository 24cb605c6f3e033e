"""The recovery service and the processor's fallback chain (issue 4).

ResetRecoveryService is driven directly on stores holding crafted histories: each strategy
(history, interpolation, conservative) must be chosen exactly when its preconditions hold, and
every state it hands out must pass StateValidator. Then the processor's chain is checked end to
end: last-known-good first, then the recovery service, each result naming its path, and the
fallback state committed in the same transaction as the reading's result.
"""

from __future__ import annotations

import sqlite3
import statistics
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from weightstream.config import Config
from weightstream.errors import StorageError
from weightstream.model import (
    Measurement,
    ResetOutcome,
    ResetType,
    Result,
    UserState,
    Verdict,
)
from weightstream.processor import Processor
from weightstream.resets.manager import ResetManager
from weightstream.resets.recovery import CONSERVATIVE_WEIGHT_VAR, ResetRecoveryService
from weightstream.resets.validator import (
    ResetOperation,
    StateValidator,
    adaptation_snapshot,
    persist_snapshot,
)
from weightstream.store.base import UnitOfWork
from weightstream.store.sqlite import SQLiteStore
from weightstream.testing import (
    FAULTS,
    T0,
    FakeClock,
    FaultyResetManager,
    FaultyStore,
    MemoryStore,
    measurement,
)

CFG = Config()
VALIDATOR = StateValidator()
NOW_DAY = 20.0  # the reading being recovered for sits at T0 + 20 days


# -- helpers ------------------------------------------------------------------------------


def stored_reading(
    weight: float, day: float, *, user: str = "u1", verdict: Verdict = Verdict.ACCEPTED
) -> tuple[Measurement, Result]:
    m = measurement(weight, day, user=user)
    r = Result(m.reading_id, m.user_id, verdict, timestamp=m.timestamp, source=m.source,
               weight_kg=m.weight_kg)
    return m, r


def store_history(store: object, rows: list[tuple[Measurement, Result]]) -> None:
    """Put readings into the store's history (no state row: only history matters here)."""
    if rows:  # with their results, as the processor writes them
        unit = UnitOfWork(readings=rows, results=[(None, r) for _, r in rows])
        store.commit(unit)  # type: ignore[attr-defined]


def service(store: object, clock: FakeClock | None = None) -> ResetRecoveryService:
    return ResetRecoveryService(
        store, ResetManager(CFG), clock=clock or FakeClock(), validator=VALIDATOR  # type: ignore[arg-type]
    )


def assert_valid(recovered: object, when: object) -> None:
    k, a = recovered.kalman, recovered.adaptation  # type: ignore[attr-defined]
    assert VALIDATOR.kalman_state_problems(k) == []
    assert VALIDATOR.problems(adaptation_snapshot(a, when), ResetOperation.ADAPTATION_CREATE) == []  # type: ignore[arg-type]
    assert k.timestamp == when


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    if request.param == "memory":
        yield MemoryStore()
    else:
        s = SQLiteStore(tmp_path / "recovery.db")
        yield s
        s.close()


def reading_now(weight: float = 80.0, user: str = "u1") -> Measurement:
    return measurement(weight, NOW_DAY, user=user, source="patient-device")


# -- strategy selection -------------------------------------------------------------------


def test_three_accepted_readings_in_the_week_before_choose_history(store) -> None:  # type: ignore[no-untyped-def]
    """Exactly three accepted readings in the 7 days before the reading give the history path."""
    store_history(store, [stored_reading(80.0, NOW_DAY - d) for d in (3, 2, 1)])
    m = reading_now()
    recovered, attempts = service(store).recover("u1", m, None)
    assert recovered.outcome is ResetOutcome.RECOVERED_HISTORY
    assert [(a.strategy, a.succeeded) for a in attempts] == [("history", True)]
    assert_valid(recovered, m.timestamp)


def test_two_in_window_do_not_choose_history_whatever_else_is_stored(store) -> None:  # type: ignore[no-untyped-def]
    """Rejected readings, readings older than 7 days and other users' readings do not count."""
    store_history(store, [
        stored_reading(80.0, NOW_DAY - 2),
        stored_reading(80.0, NOW_DAY - 1),
        stored_reading(80.0, NOW_DAY - 1.5, verdict=Verdict.REJECTED),
        stored_reading(80.0, NOW_DAY - 0.5, verdict=Verdict.LATE),
        stored_reading(80.0, NOW_DAY - 8),
        stored_reading(80.0, NOW_DAY - 0.7, user="other"),
        stored_reading(80.0, NOW_DAY - 0.6, user="other"),
    ])
    recovered, attempts = service(store).recover("u1", reading_now(), None)
    assert attempts[0].strategy == "history" and not attempts[0].succeeded
    assert attempts[0].detail.startswith("2 accepted readings")
    assert recovered.outcome is ResetOutcome.CONSERVATIVE


@pytest.mark.parametrize(
    ("days_before", "history"),
    [
        ((7.0, 2.0, 1.0), True),  # a reading exactly 7 days before is inside the window
        ((7.0 + 1e-6, 2.0, 1.0), False),  # a fraction of a second earlier is not
        ((2.0, 1.0, 0.0), False),  # one at the reading's own time is not "before"
    ],
)
def test_history_window_bounds(store, days_before: tuple[float, ...], history: bool) -> None:  # type: ignore[no-untyped-def]
    """The window is [t - 7 days, t): its start is included, the reading's own time is not."""
    store_history(store, [stored_reading(80.0 + i * 0.1, NOW_DAY - d)
                          for i, d in enumerate(days_before)])
    recovered, _ = service(store).recover("u1", reading_now(), None)
    assert (recovered.outcome is ResetOutcome.RECOVERED_HISTORY) is history


def test_history_level_follows_the_trend_to_the_reading() -> None:
    """Level is the mean carried along the slope to the reading's time; the slope is exact."""
    store = MemoryStore()
    slope = -0.2  # kg/day
    store_history(store, [stored_reading(90.0 + slope * -d, NOW_DAY - d)
                          for d in (6, 5, 4, 3, 2, 1)])
    recovered, _ = service(store).recover("u1", reading_now(), None)
    level, trend = recovered.kalman.x
    assert trend == pytest.approx(slope, abs=1e-9)
    assert level == pytest.approx(90.0, abs=1e-9)
    # no spread around the line: the configured floor, not zero
    assert ((CFG.filter.initial_weight_var, 0.0),
                                  (0.0, CFG.filter.initial_trend_var)) == recovered.kalman.P


def test_history_slope_is_robust_to_one_outlier() -> None:
    """One wild reading among five on a line leaves the Theil-Sen slope on the line."""
    store = MemoryStore()
    slope = 0.1
    weights = {5: 80.0, 4: 80.1, 3: 80.2 + 6.0, 2: 80.3, 1: 80.4}  # day 3 is an outlier
    store_history(store, [stored_reading(w, NOW_DAY - d) for d, w in weights.items()])
    recovered, _ = service(store).recover("u1", reading_now(), None)
    assert recovered.kalman.x[1] == pytest.approx(slope, abs=1e-9)


def test_history_variance_comes_from_the_spread() -> None:
    """A noisy week gives a weight variance equal to the spread around the fitted line."""
    store = MemoryStore()
    store_history(store, [stored_reading(w, NOW_DAY - d)
                 for d, w in ((4, 78.0), (3, 82.0), (2, 82.0), (1, 78.0))])
    recovered, _ = service(store).recover("u1", reading_now(), None)
    assert recovered.kalman.x == pytest.approx((80.0, 0.0))
    (p00, p01), (p10, p11) = recovered.kalman.P
    assert p00 == pytest.approx(4.0)  # residuals -2, 2, 2, -2
    assert p11 == pytest.approx(4.0 / 49.0)
    assert p01 == p10 == 0.0


def test_interpolation_between_the_nearest_accepted_neighbours(store) -> None:  # type: ignore[no-untyped-def]
    """Fewer than 3 readings in the window and neighbours on both sides: linear interpolation."""
    store_history(store, [
        stored_reading(90.0, NOW_DAY - 20),
        stored_reading(80.0, NOW_DAY - 10),  # nearest before
        stored_reading(99.0, NOW_DAY - 5, verdict=Verdict.REJECTED),  # not a neighbour
        stored_reading(77.0, NOW_DAY + 2),  # nearest after
        stored_reading(70.0, NOW_DAY + 5),
    ])
    m = reading_now()
    recovered, attempts = service(store).recover("u1", m, None)
    assert recovered.outcome is ResetOutcome.RECOVERED_INTERPOLATED
    assert [(a.strategy, a.succeeded) for a in attempts] == [
        ("history", False), ("interpolation", True)]
    level, trend = recovered.kalman.x
    assert level == pytest.approx(80.0 - 3.0 * 10.0 / 12.0)
    assert trend == pytest.approx(-3.0 / 12.0)
    assert_valid(recovered, m.timestamp)


@pytest.mark.parametrize("side", ["before", "after"])
def test_one_sided_neighbours_fall_through_to_conservative(store, side: str) -> None:  # type: ignore[no-untyped-def]
    """Accepted readings on one side only do not allow interpolation: conservative state."""
    offset = -10.0 if side == "before" else 10.0
    store_history(store, [stored_reading(80.0, NOW_DAY + offset),
                          stored_reading(80.5, NOW_DAY + 2 * offset)])
    m = reading_now(83.0)
    recovered, attempts = service(store).recover("u1", m, None)
    assert [(a.strategy, a.succeeded) for a in attempts] == [
        ("history", False), ("interpolation", False), ("conservative", True)]
    assert recovered.outcome is ResetOutcome.CONSERVATIVE
    assert recovered.kalman.x == (83.0, 0.0)
    assert recovered.kalman.P[0][0] == CONSERVATIVE_WEIGHT_VAR
    assert recovered.adaptation.reset_type is ResetType.INITIAL
    assert_valid(recovered, m.timestamp)


def test_a_history_state_that_fails_validation_is_a_failed_attempt() -> None:
    """Three readings implying 48 kg/day fail validation, so the next strategy is used."""
    store = MemoryStore()
    store_history(store, [stored_reading(w, NOW_DAY - h / 24)
                          for h, w in ((3, 80.0), (2, 82.0), (1, 84.0))])
    recovered, attempts = service(store).recover("u1", reading_now(), None)
    assert attempts[0].strategy == "history" and not attempts[0].succeeded
    assert "failed validation" in attempts[0].detail
    assert recovered.outcome is ResetOutcome.CONSERVATIVE
    assert_valid(recovered, reading_now().timestamp)


def test_a_strategy_that_raises_is_recorded_and_skipped() -> None:
    """A store query blowing up inside a strategy is an attempt with the error's name."""

    class BrokenHistory(MemoryStore):
        def accepted_between(self, *args: object) -> list:  # type: ignore[override]
            raise StorageError("disk on fire")

    store = BrokenHistory()
    store_history(store, [stored_reading(80.0, NOW_DAY - 10), stored_reading(80.0, NOW_DAY + 10)])
    recovered, attempts = service(store).recover("u1", reading_now(), None)
    assert (attempts[0].strategy, attempts[0].succeeded, attempts[0].detail) == (
        "history", False, "StorageError")
    assert recovered.outcome is ResetOutcome.RECOVERED_INTERPOLATED


def test_stand_alone_recovery_persists_every_attempt(store) -> None:  # type: ignore[no-untyped-def]
    """recover_from_failed_reset stores each attempt, failed ones included, in order."""
    clock = FakeClock(start=T0)
    store_history(store, [stored_reading(80.0, NOW_DAY - 1)])
    m = reading_now()
    recovered = service(store, clock).recover_from_failed_reset("u1", m, None)
    assert recovered.outcome is ResetOutcome.CONSERVATIVE
    rows = store.recovery_attempts("u1")
    assert [(a.strategy, a.succeeded, a.reading_id, a.at) for a in rows] == [
        ("history", False, m.reading_id, T0),
        ("interpolation", False, m.reading_id, T0),
        ("conservative", True, m.reading_id, T0),
    ]
    assert store.recovery_attempts("someone-else") == []


# -- property: the first strategy whose preconditions hold, and always a valid state -------

history_entries = st.lists(
    st.tuples(
        st.integers(min_value=-14 * 4, max_value=14 * 4),  # 6-hour slots around the reading
        st.floats(min_value=79.5, max_value=80.5, allow_nan=False),
        st.sampled_from([Verdict.ACCEPTED, Verdict.ACCEPTED, Verdict.REJECTED]),
    ),
    max_size=12,
    unique_by=lambda e: e[0],
)


@seed(4)
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(entries=history_entries, weight=st.floats(min_value=40.0, max_value=200.0))
def test_strategy_is_chosen_exactly_when_its_preconditions_hold(
    entries: list[tuple[int, float, Verdict]], weight: float
) -> None:
    """Over random histories: history iff >= 3 accepted in [t-7d, t), else interpolation iff
    accepted neighbours on both sides, else conservative; the state is always valid."""
    store = MemoryStore()
    store_history(store, [stored_reading(w, NOW_DAY + slot / 4, verdict=v)
                          for slot, w, v in entries])
    m = reading_now(weight)
    accepted = [slot / 4 for slot, _, v in entries if v is Verdict.ACCEPTED]
    in_window = [d for d in accepted if -7.0 <= d < 0.0]
    if len(in_window) >= 3:
        expected = ResetOutcome.RECOVERED_HISTORY
    elif any(d <= 0.0 for d in accepted) and any(d > 0.0 for d in accepted):
        expected = ResetOutcome.RECOVERED_INTERPOLATED
    else:
        expected = ResetOutcome.CONSERVATIVE
    recovered, attempts = service(store).recover("u1", m, None)
    assert recovered.outcome is expected
    names = [a.strategy for a in attempts]
    assert names == ["history", "interpolation", "conservative"][: len(names)]
    assert [a.succeeded for a in attempts] == [False] * (len(attempts) - 1) + [True]
    assert_valid(recovered, m.timestamp)


# -- the processor's fallback chain -------------------------------------------------------


def daily(user: str, n: int, start: float = 0.0, base: float = 80.0) -> list[Measurement]:
    return [measurement(base + 0.1 * (i % 3), start + i, user=user) for i in range(n)]


def check_stored(store: object, user: str, before: UserState | None) -> UserState:
    """The stored state passes the validator, and as a successor of the previous one."""
    after = store.load_state(user)  # type: ignore[attr-defined]
    assert after is not None
    assert VALIDATOR.user_state_problems(after) == []
    assert VALIDATOR.problems(persist_snapshot(before, after), ResetOperation.STATE_PERSIST) == []
    return after


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_every_reset_fault_falls_back_to_last_known_good(fault: str) -> None:
    """Whatever step of a gap reset fails, the reading is filtered from the last good state."""
    store = MemoryStore()
    p = Processor(store, CFG, clock=FakeClock(), manager=FaultyResetManager(CFG))
    for m in daily("u1", 5):
        p.process_one(m)
    before = store.load_state("u1")
    p.manager = FaultyResetManager(CFG, fault)
    m = measurement(80.4, 40.0)  # a 36-day gap: hard reset
    result = p.process_one(m)
    assert result.verdict is Verdict.ACCEPTED
    assert result.reset_outcome is ResetOutcome.FALLBACK_LAST_GOOD
    assert p.manager.triggered == 1  # type: ignore[attr-defined]
    after = check_stored(store, "u1", before)
    assert after.accepted_count == before.accepted_count + 1
    assert store.recovery_attempts("u1") == []  # the chain stopped at step 1
    audit = store.audits("u1")[-1]
    assert (audit.reading_id, audit.outcome, audit.fallback) == (
        m.reading_id, "rolled_back", ResetOutcome.FALLBACK_LAST_GOOD)


def sqlite_user_without_state(tmp_path: Path, readings: list[Measurement]) -> SQLiteStore:
    """A SQLite store holding the user's history but neither a state nor a last-good row."""
    db = tmp_path / "chain.db"
    store = SQLiteStore(db)
    p = Processor(store, CFG, clock=FakeClock())
    for m in readings:
        p.process_one(m)
    with sqlite3.connect(db) as raw:
        raw.execute("DELETE FROM user_states WHERE user_id = 'u1'")
        raw.execute("DELETE FROM last_good_states WHERE user_id = 'u1'")
    raw.close()
    return store


@pytest.mark.parametrize(
    ("readings", "new", "expected", "strategies"),
    [
        pytest.param(daily("u1", 6), measurement(80.2, 6.5), ResetOutcome.RECOVERED_HISTORY,
                     [("history", True)], id="history"),
        pytest.param(daily("u1", 3) + daily("u1", 3, start=30.0),  # a week-wide hole at day 15
                     measurement(80.1, 15.0), ResetOutcome.RECOVERED_INTERPOLATED,
                     [("history", False), ("interpolation", True)], id="interpolation"),
        pytest.param([], measurement(80.2, 6.5), ResetOutcome.CONSERVATIVE,
                     [("history", False), ("interpolation", False), ("conservative", True)],
                     id="conservative"),
    ],
)
def test_without_a_last_good_state_the_recovery_service_is_used(
    tmp_path: Path, readings: list[Measurement], new: Measurement,
    expected: ResetOutcome, strategies: list[tuple[str, bool]],
) -> None:
    """No last-known-good state: the failed reset's reading gets the recovery service's state,
    its path in the result, the attempts persisted, and a valid committed state."""
    store = sqlite_user_without_state(tmp_path, readings)
    p = Processor(store, CFG, clock=FakeClock(), manager=FaultyResetManager(CFG, "kalman_raises"))
    result = p.process_one(new)
    assert result.verdict is Verdict.ACCEPTED
    assert result.reset_outcome is expected
    assert [(a.strategy, a.succeeded) for a in store.recovery_attempts("u1")] == strategies
    assert all(a.reading_id == new.reading_id for a in store.recovery_attempts("u1"))
    state = check_stored(store, "u1", None)
    assert state.buffer[-1].timestamp == new.timestamp
    assert store.audits("u1", outcome=str(expected))[-1].reading_id == new.reading_id
    assert store.integrity_check() == "ok"
    store.close()


def test_last_good_is_preferred_over_recovery_even_from_the_store(tmp_path: Path) -> None:
    """With the state row gone but a last-good snapshot stored, step 1 wins over history."""
    db = tmp_path / "lg.db"
    store = SQLiteStore(db)
    p = Processor(store, CFG, clock=FakeClock())
    for m in daily("u1", 6):
        p.process_one(m)
    with sqlite3.connect(db) as raw:
        raw.execute("DELETE FROM user_states WHERE user_id = 'u1'")
    raw.close()
    p = Processor(store, CFG, clock=FakeClock(), manager=FaultyResetManager(CFG, "kalman_raises"))
    result = p.process_one(measurement(80.2, 6.5))
    assert result.reset_outcome is ResetOutcome.FALLBACK_LAST_GOOD
    assert store.recovery_attempts("u1") == []
    check_stored(store, "u1", None)
    store.close()


def test_corrupt_last_good_snapshot_is_skipped_for_recovery(tmp_path: Path) -> None:
    """A last-good snapshot that fails validation is not used: the chain moves to history."""
    db = tmp_path / "badlg.db"
    store = SQLiteStore(db)
    p = Processor(store, CFG, clock=FakeClock())
    for m in daily("u1", 6):
        p.process_one(m)
    with sqlite3.connect(db) as raw:
        raw.execute("PRAGMA ignore_check_constraints = ON")
        raw.execute("DELETE FROM user_states WHERE user_id = 'u1'")
        raw.execute("UPDATE last_good_states SET p00 = -1.0 WHERE user_id = 'u1'")
    raw.close()
    p = Processor(store, CFG, clock=FakeClock(), manager=FaultyResetManager(CFG, "kalman_raises"))
    result = p.process_one(measurement(80.2, 6.5))
    assert result.reset_outcome is ResetOutcome.RECOVERED_HISTORY
    check_stored(store, "u1", None)
    store.close()


@pytest.mark.parametrize("path", ["last_good", "recovery"])
def test_fallback_state_commits_with_its_result_or_not_at_all(path: str) -> None:
    """A failing store commit leaves no trace of the fallback (no reading, result, state, audit
    or attempt); once the store works, the same reading is stored exactly once."""
    inner = MemoryStore()
    p = Processor(inner, CFG, clock=FakeClock())
    if path == "last_good":
        for m in daily("u1", 5):
            p.process_one(m)
        m, outcome = measurement(80.4, 40.0), ResetOutcome.FALLBACK_LAST_GOOD
    else:
        m, outcome = measurement(80.4, 0.0), ResetOutcome.CONSERVATIVE
    before = inner.load_state("u1")
    n_audits, n_history = len(inner.audits()), len(inner.history("u1"))
    faulty = FaultyStore(inner, StorageError("commit lost"))
    p = Processor(faulty, CFG, clock=FakeClock(),  # type: ignore[arg-type]
                  manager=FaultyResetManager(CFG, "adaptation_raises"))
    with pytest.raises(StorageError):
        p.process_one(m)
    assert faulty.failures == 1
    assert inner.load_state("u1") == before
    assert len(inner.history("u1")) == n_history
    assert len(inner.audits()) == n_audits
    assert inner.recovery_attempts() == []
    assert inner.existing_keys([(m.user_id, m.reading_id)]) == set()
    faulty.armed = False
    result = p.process_one(m)
    assert result.reset_outcome is outcome
    assert [r.measurement.reading_id for r in inner.history("u1")].count(m.reading_id) == 1
    assert len(inner.audits()) == n_audits + 1
    check_stored(inner, "u1", before)


def test_fallback_version_and_times_move_forward_only() -> None:
    """Consecutive fallbacks each bump the version by one and never move time backwards."""
    store = MemoryStore()
    p = Processor(store, CFG, clock=FakeClock(), manager=FaultyResetManager(CFG, "buffer_nan"))
    prev = None
    for i, m in enumerate([*daily("u1", 3), measurement(80.0, 40.0), measurement(80.1, 80.0)]):
        p.process_one(m)
        state = check_stored(store, "u1", prev)
        assert state.version == i + 1
        if prev is not None:
            assert state.last_event_at > prev.last_event_at
        prev = state
    assert [a.fallback for a in store.audits("u1")] == [
        ResetOutcome.CONSERVATIVE, ResetOutcome.FALLBACK_LAST_GOOD, ResetOutcome.FALLBACK_LAST_GOOD]


def test_history_level_ignores_the_readings_own_weight() -> None:
    """The history path trusts the week before, not the (possibly wrong) reading itself."""
    store = MemoryStore()
    store_history(store, [stored_reading(80.0 + 0.1 * i, NOW_DAY - d)
                          for i, d in enumerate((3, 2, 1))])
    m = reading_now(95.0)
    recovered, _ = service(store).recover("u1", m, replace(UserState("u1"), version=1))
    assert recovered.kalman.x[0] == pytest.approx(
        statistics.fmean([80.0, 80.1, 80.2]) + 0.1 * 2.0, abs=1e-9)
    assert recovered.kalman.timestamp == m.timestamp == T0 + timedelta(days=NOW_DAY)
