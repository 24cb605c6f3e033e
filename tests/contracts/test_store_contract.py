"""The store contract, run on every back-end (memory, SQLite; PostgreSQL via the conftest hook).

What is checked through ``backend.reopen()`` is seen by a fresh store (for SQLite: a second
connection on the same file), so it is what is really stored, not the writer's view.
"""

from __future__ import annotations

import dataclasses
import math
import random
import sqlite3
from datetime import UTC, datetime, timedelta
from itertools import count
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from weightstream.errors import (
    ConflictError,
    StorageError,
    StorageFullError,
    StoreBusyError,
    StoreOpenError,
)
from weightstream.model import (
    AdaptationState,
    AuditOutcome,
    BufferedReading,
    KalmanState,
    Measurement,
    Reason,
    RecoveryAttempt,
    ResetAudit,
    ResetOutcome,
    ResetType,
    Result,
    UserState,
    Verdict,
)
from weightstream.store.base import StateStore, UnitOfWork
from weightstream.store.sqlite import SQLiteStore

from .conftest import Backend

T0 = datetime(2025, 3, 1, 7, 30, tzinfo=UTC)


# -- builders ---------------------------------------------------------------------------------


def day(d: float) -> datetime:
    return T0 + timedelta(days=d)


def state(user: str = "u1", version: int = 1, weight: float = 80.0, **kw: object) -> UserState:
    """A valid filtered state of ``user`` at ``version``."""
    k = KalmanState(x=(weight, -0.01), P=((0.4, 0.002), (0.002, 0.0009)), timestamp=day(version))
    fields: dict[str, object] = dict(
        user_id=user,
        kalman=k,
        buffer=(BufferedReading(day(version), weight, "patient-device"),),
        last_accepted_at=day(version),
        last_event_at=day(version),
        accepted_count=version,
        version=version,
    )
    fields.update(kw)
    return UserState(**fields)  # type: ignore[arg-type]


_ids = count()


def reading(
    user: str = "u1",
    d: float = 0.0,
    weight: float = 80.0,
    verdict: Verdict = Verdict.ACCEPTED,
    *,
    rid: str | None = None,
    source: str = "patient-device",
) -> tuple[Measurement, Result]:
    """A stored reading and its canonical result (the fields a back-end keeps for history)."""
    when = day(d)
    rid = rid if rid is not None else f"r{next(_ids)}"
    m = Measurement(rid, user, when, weight, "kg", weight, source)
    r = Result(
        reading_id=rid,
        user_id=user,
        verdict=verdict,
        reason=Reason.OK if verdict is Verdict.ACCEPTED else Reason.INNOVATION_OUTLIER,
        message="" if verdict is Verdict.ACCEPTED else "5.1 sigma from the prediction",
        timestamp=when,
        source=source,
        weight_kg=weight,
        filtered_weight=weight - 0.1 if verdict is Verdict.ACCEPTED else None,
        trend_kg_week=-0.07 if verdict is Verdict.ACCEPTED else None,
        std_kg=0.5 if verdict is Verdict.ACCEPTED else None,
    )
    return m, r


def row_result(r: Result, row: int) -> Result:
    """The result of input row ``row`` (as written to the results table)."""
    from dataclasses import replace

    return replace(r, row=row, quality=0.93, quality_components=(("consistency", 0.9),))


def audit(user: str = "u1", outcome: str = "committed", d: float = 0.0, **kw: object) -> ResetAudit:
    fields: dict[str, object] = dict(
        user_id=user,
        reading_id=f"a{next(_ids)}",
        reset_type=ResetType.HARD,
        trigger="gap of 31.0 days",
        outcome=AuditOutcome(outcome),
        failed_operation=None,
        reason=None,
        duration_s=0.00125,
        at=day(d),
        fallback=None,
        checkpoints=(("kalman", True), ("noise", True)),
    )
    fields.update(kw)
    return ResetAudit(**fields)  # type: ignore[arg-type]


def recovery(user: str = "u1", ok: bool = True, d: float = 0.0) -> RecoveryAttempt:
    return RecoveryAttempt(
        user, f"c{next(_ids)}", "history", ok, "rebuilt from 12 readings", day(d)
    )


def full_unit(
    user: str = "u1",
    *,
    version: int = 1,
    expected: int = 0,
    input_id: str = "in.csv",
    position: int = 3,
    first_row: int = 1,
    d: float = 0.0,
) -> UnitOfWork:
    """A unit touching every table: state, readings, results, audits, last good, position."""
    unit = UnitOfWork()
    s = state(user, version)
    unit.put_state(s, expected)
    for i in range(3):
        m, r = reading(user, d + i, 80.0 + i / 10)
        unit.readings.append((m, r))
        unit.results.append((input_id, row_result(r, first_row + i)))
    unit.audits.append(audit(user, d=d))
    unit.recoveries.append(recovery(user, d=d))
    unit.last_good[user] = (s, day(d))
    unit.position = (input_id, position)
    return unit


def snapshot(
    store: StateStore, users: list[str], keys: list[tuple[str, str]], inputs: list[str]
) -> dict:
    """Everything a store holds about these users, keys and inputs (for before/after checks)."""
    return {
        "states": {u: store.load_state(u) for u in users},
        "last_good": {u: store.last_good(u) for u in users},
        "history": {u: store.history(u) for u in users},
        "keys": store.existing_keys(keys),
        "results": {i: list(store.results_for_input(i)) for i in inputs},
        "positions": {i: store.position(i) for i in inputs},
        "audits": store.audits(),
        "recoveries": store.recovery_attempts(),
        "users": store.users(),
    }


def unit_keys(unit: UnitOfWork) -> list[tuple[str, str]]:
    return [(m.user_id, k) for m, _ in unit.readings for k in (m.reading_id, m.content_key)]


def assert_nothing_of(unit: UnitOfWork, store: StateStore) -> None:
    """No row of ``unit`` (readings, results, audits, recoveries) is in ``store``."""
    assert store.existing_keys(unit_keys(unit)) == set()
    stored_results = [r for i, _ in unit.results for r in store.results_for_input(i or "")]
    for _, r in unit.results:
        assert r not in stored_results
    for a in unit.audits:
        assert a not in store.audits()
    for a in unit.recoveries:
        assert a not in store.recovery_attempts()


def fresh(backend: Backend) -> StateStore:
    """A new store on the same data (a second connection for SQLite)."""
    return backend.reopen()


# -- round trips ------------------------------------------------------------------------------

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
times = st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)
opt_times = st.none() | times
finite = st.floats(allow_nan=False, allow_infinity=False)
reset_types = st.sampled_from(list(ResetType))


@st.composite
def kalman_states(draw: st.DrawFn) -> KalmanState:
    p00 = draw(st.floats(1e-6, 1e6))
    p11 = draw(st.floats(1e-9, 1e3))
    rho = draw(st.floats(-0.99, 0.99))
    p01 = rho * math.sqrt(p00 * p11)
    return KalmanState(
        x=(draw(st.floats(1e-3, 1e3)), draw(st.floats(-100.0, 100.0))),
        P=((p00, p01), (p01, p11)),
        timestamp=draw(times),
    )


entries = st.builds(BufferedReading, times, finite, text) | st.builds(
    BufferedReading, times, finite, text, unit=text, value=st.none() | finite, reading_id=text
)
buffers = st.lists(entries, max_size=5).map(tuple)
adaptations = st.builds(
    AdaptationState,
    is_adapting=st.booleans(),
    adaptation_start=opt_times,
    adaptation_factor=st.floats(1.0, 100.0),
    measurements_since_reset=st.integers(0, 10_000),
    reset_type=st.none() | reset_types,
)
user_states = st.builds(
    UserState,
    user_id=st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12),
    kalman=st.none() | kalman_states(),
    adaptation=adaptations,
    buffer=buffers,
    rejected=buffers,
    last_accepted_at=opt_times,
    last_event_at=opt_times,
    last_reset_at=opt_times,
    last_reset_type=st.none() | reset_types,
    accepted_count=st.integers(0, 2**53),
    version=st.integers(1, 2**53),
)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(s=user_states, taken=times)
def test_state_round_trips_exactly(backend: Backend, store: StateStore, s: UserState, taken):
    """Any valid UserState (buffers, adaptation, None fields) reads back == what was written."""
    stored = store.load_state(s.user_id)
    before = stored.version if stored else 0
    s = dataclasses.replace(s, version=before + s.version)  # versions only move forward
    unit = UnitOfWork()
    unit.put_state(s, before)
    unit.last_good[s.user_id] = (s, taken)
    store.commit(unit)
    assert store.load_state(s.user_id) == s
    other = fresh(backend)
    try:
        assert other.load_state(s.user_id) == s
        assert other.load_states([s.user_id, "\x00absent"]) == {s.user_id: s}
        assert other.last_good(s.user_id) == (s, taken)
        assert s.user_id in other.users()
    finally:
        if other is not store:
            other.close()


def test_rows_round_trip(backend: Backend, store: StateStore):
    """Readings, results, audits and recovery attempts read back equal to what was written."""
    unit = full_unit()
    unit.audits.append(
        audit(
            outcome="rolled_back",
            failed_operation="kalman",
            reason="nan in x",
            fallback=ResetOutcome.FALLBACK_LAST_GOOD,
            checkpoints=(("kalman", False),),
        )
    )
    store.commit(unit)
    other = fresh(backend)
    assert [(h.measurement, h.result) for h in other.history("u1")] == unit.readings
    assert list(other.results_for_input("in.csv")) == [r for _, r in unit.results]
    assert other.audits() == unit.audits
    assert other.recovery_attempts() == unit.recoveries
    assert other.position("in.csv") == 3


def test_unknown_things_are_empty(store: StateStore):
    """An empty store answers every query with 'nothing' rather than an error."""
    assert store.load_state("nobody") is None
    assert store.load_states(["nobody"]) == {}
    assert store.last_good("nobody") is None
    assert store.history("nobody") == []
    assert store.accepted_between("nobody", day(0), day(9)) == []
    assert store.nearest_accepted("nobody", day(0)) == (None, None)
    assert store.position("nothing.csv") == 0
    assert list(store.results_for_input("nothing.csv")) == []
    assert store.audits() == [] and store.recovery_attempts() == []
    assert store.existing_keys([("nobody", "a"), ("nobody", "b")]) == set()
    assert store.known_users(["nobody"]) == set()
    assert store.users() == []


def test_empty_unit_is_a_no_op(backend: Backend, store: StateStore):
    """Committing an empty unit stores nothing and raises nothing."""
    store.commit(UnitOfWork())
    assert fresh(backend).users() == []


# -- all or nothing ---------------------------------------------------------------------------


def test_committed_unit_is_visible_to_a_fresh_store(backend: Backend, store: StateStore):
    """After commit returns, a fresh store (second connection) sees every part of the unit."""
    unit = full_unit()
    store.commit(unit)
    other = fresh(backend)
    assert other.load_state("u1") == unit.states["u1"]
    assert other.last_good("u1") == unit.last_good["u1"]
    assert other.existing_keys(unit_keys(unit)) == set(unit_keys(unit))
    assert len(list(other.results_for_input("in.csv"))) == 3
    assert len(other.audits("u1")) == 1 and len(other.recovery_attempts("u1")) == 1
    assert other.position("in.csv") == 3


def test_stale_version_conflicts_and_stores_nothing(backend: Backend, store: StateStore):
    """A unit with a stale expected version raises ConflictError and stores none of its rows."""
    store.commit(full_unit("u1", version=1, expected=0))
    before = snapshot(fresh(backend), ["u1", "u2"], [], ["in.csv"])
    stale = full_unit("u1", version=2, expected=0, position=9, first_row=10, d=10.0)
    # A second, perfectly valid user in the same unit must not be written either.
    stale.put_state(state("u2", 1), 0)
    stale.last_good["u2"] = (state("u2", 1), day(10))
    with pytest.raises(ConflictError):
        store.commit(stale)
    other = fresh(backend)
    assert_nothing_of(stale, other)
    assert snapshot(other, ["u1", "u2"], [], ["in.csv"]) == before
    assert other.load_state("u1").version == 1  # type: ignore[union-attr]
    assert other.load_state("u2") is None
    assert other.position("in.csv") == 3


def test_stale_version_of_second_user_conflicts(backend: Backend, store: StateStore):
    """Conflict on any one user of a multi-user unit fails the whole unit."""
    store.commit(full_unit("u2", version=1, expected=0, input_id="a.csv"))
    unit = full_unit("u1", version=1, expected=0, input_id="b.csv")
    unit.put_state(state("u2", 5), 3)  # stored is 1, not 3
    with pytest.raises(ConflictError):
        store.commit(unit)
    other = fresh(backend)
    assert other.load_state("u1") is None
    assert other.load_state("u2").version == 1  # type: ignore[union-attr]
    assert other.position("b.csv") == 0
    assert_nothing_of(unit, other)


def test_retry_with_fresh_version_succeeds(backend: Backend, store: StateStore):
    """After a conflict, the same unit rebuilt on the stored version commits."""
    store.commit(full_unit("u1", version=1, expected=0))
    with pytest.raises(ConflictError):
        store.commit(full_unit("u1", version=2, expected=0, first_row=4, position=6, d=5))
    store.commit(full_unit("u1", version=2, expected=1, first_row=4, position=6, d=5))
    other = fresh(backend)
    assert other.load_state("u1").version == 2  # type: ignore[union-attr]
    assert other.position("in.csv") == 6
    assert [r.row for r in other.results_for_input("in.csv")] == [1, 2, 3, 4, 5, 6]


def test_duplicate_key_within_unit_conflicts(backend: Backend, store: StateStore):
    """Two readings with one key in a unit raise ConflictError and nothing is stored."""
    unit = full_unit()
    m, r = reading("u1", 7, 81.0, rid=unit.readings[0][0].reading_id)
    unit.readings.append((m, r))
    with pytest.raises(ConflictError):
        store.commit(unit)
    other = fresh(backend)
    assert other.load_state("u1") is None
    assert other.existing_keys(unit_keys(unit)) == set()
    assert other.position("in.csv") == 0
    assert other.audits() == [] and other.recovery_attempts() == []
    assert list(other.results_for_input("in.csv")) == []


def test_duplicate_content_within_unit_conflicts(backend: Backend, store: StateStore):
    """Two readings with different ids but the same content conflict; nothing is stored."""
    unit = UnitOfWork()
    m1, r1 = reading("u1", 1, 80.0, rid="x1")
    m2, r2 = reading("u1", 1, 80.0, rid="x2")
    assert m1.content_key == m2.content_key
    unit.readings += [(m1, r1), (m2, r2)]
    unit.put_state(state("u1"), 0)
    with pytest.raises(ConflictError):
        store.commit(unit)
    other = fresh(backend)
    assert other.existing_keys([("u1", "x1"), ("u1", "x2"), ("u1", m1.content_key)]) == set()
    assert other.load_state("u1") is None


def test_key_already_stored_conflicts(backend: Backend, store: StateStore):
    """A reading whose key was stored by an earlier unit conflicts; the new unit stores nothing."""
    first = full_unit()
    store.commit(first)
    again = full_unit("u1", version=2, expected=1, first_row=4, position=6, d=20)
    m, r = reading("u1", 30, 90.0, rid=first.readings[1][0].reading_id)
    again.readings.append((m, r))
    with pytest.raises(ConflictError):
        store.commit(again)
    other = fresh(backend)
    assert other.load_state("u1").version == 1  # type: ignore[union-attr]
    assert other.position("in.csv") == 3
    assert len(other.history("u1")) == 3
    assert other.existing_keys([("u1", m.content_key) for m, _ in again.readings[:3]]) == set()


# -- keys and history -------------------------------------------------------------------------


def test_existing_keys_finds_ids_and_content_keys(store: StateStore):
    """existing_keys answers for reading ids and content keys alike, and only for stored ones."""
    unit = UnitOfWork()
    m, r = reading("u1", 1, 80.0, rid="id-1")
    unit.readings.append((m, r))
    store.commit(unit)
    assert store.existing_keys([("u1", "id-1")]) == {("u1", "id-1")}
    assert store.existing_keys([("u1", m.content_key)]) == {("u1", m.content_key)}
    asked = [("u1", "id-1"), ("u1", m.content_key), ("u1", "id-2"), ("u1", "h:0"), ("u2", "id-1")]
    assert store.existing_keys(asked) == {("u1", "id-1"), ("u1", m.content_key)}
    assert store.existing_keys([]) == set()


def test_existing_keys_answers_many_users_at_once(store: StateStore):
    """1,500 pairs over 300 users (a service group, a file group): exactly the stored ones,
    whether asked as ids or content keys, duplicates in the question asked once."""
    unit = UnitOfWork()
    stored = [reading(f"user-{k:03d}", k % 7, 80.0, rid=f"id-{k}") for k in range(0, 300, 2)]
    unit.readings += stored
    store.commit(unit)
    asked = [(f"user-{k:03d}", f"id-{k}") for k in range(300)]
    asked += [(f"user-{k:03d}", f"id-{k + 1}") for k in range(300)]  # another user's id
    asked += [(m.user_id, m.content_key) for m, _ in stored]
    asked += [(f"user-{k:03d}", "h:none") for k in range(300)]
    asked += asked[:300]
    want = {(m.user_id, m.reading_id) for m, _ in stored}
    want |= {(m.user_id, m.content_key) for m, _ in stored}
    assert store.existing_keys(asked) == want


def test_a_reading_id_is_its_users_own(backend: Backend, store: StateStore):
    """The same reading id under two users is two readings: both are stored, neither lost."""
    unit = UnitOfWork()
    unit.readings += [reading("u1", 1, 80.0, rid="same"), reading("u2", 1, 70.0, rid="same")]
    store.commit(unit)
    other = fresh(backend)
    assert other.existing_keys([("u1", "same"), ("u2", "same")]) == {("u1", "same"), ("u2", "same")}
    assert [h.measurement.weight_kg for h in other.history("u1")] == [80.0]
    assert [h.measurement.weight_kg for h in other.history("u2")] == [70.0]
    again = UnitOfWork()
    again.readings.append(reading("u2", 2, 71.0, rid="same"))
    with pytest.raises(ConflictError):
        store.commit(again)


def test_known_users_names_users_with_a_state(store: StateStore):
    """known_users: the users with a stored state row, among those asked."""
    unit = UnitOfWork()
    unit.put_state(state("u1"), 0)
    store.commit(unit)
    assert store.known_users(["u1", "u2"]) == {"u1"}
    assert store.known_users([]) == set()


def test_state_versions_move_with_every_commit(store: StateStore):
    """state_versions: the stored version of each user with a state row, among those asked;
    a commit of the state moves it (what a process sharing the store checks its cache by)."""
    unit = UnitOfWork()
    unit.put_state(state("u1"), 0)
    store.commit(unit)
    assert store.state_versions(["u1", "u2"]) == {"u1": 1}
    again = UnitOfWork()
    again.put_state(state("u1", version=2, weight=81.0), 1)
    store.commit(again)
    assert store.state_versions(["u1"]) == {"u1": 2}
    assert store.state_versions([]) == {}


def test_existing_keys_many(store: StateStore):
    """existing_keys works for more keys than one query can bind (chunking)."""
    unit = UnitOfWork()
    for i in range(700):
        unit.readings.append(reading(f"u{i % 7}", i / 10, 70.0 + i / 100, rid=f"k{i}"))
    store.commit(unit)
    asked = [(f"u{i % 7}", f"k{i}") for i in range(0, 1400, 2)]
    assert store.existing_keys(asked) == {(f"u{i % 7}", f"k{i}") for i in range(0, 700, 2)}


def test_history_in_event_time_then_arrival_order(backend: Backend, store: StateStore):
    """History is ordered by timestamp, ties by arrival; other users' readings stay out."""
    u1 = UnitOfWork()
    u1.readings += [reading("u1", 5, 80.0, rid="late5"), reading("u1", 2, 80.5, rid="b2")]
    u1.readings.append(reading("u2", 3, 60.0, rid="other"))
    store.commit(u1)
    u2 = UnitOfWork()
    u2.readings += [
        reading("u1", 2, 81.0, Verdict.REJECTED, rid="b2-later", source="questionnaire"),
        reading("u1", 1, 79.0, rid="a1"),
    ]
    store.commit(u2)
    rows = fresh(backend).history("u1")
    assert [h.measurement.reading_id for h in rows] == ["a1", "b2", "b2-later", "late5"]
    by_id = {h.measurement.reading_id: h for h in rows}
    assert by_id["b2"].seq < by_id["b2-later"].seq
    assert by_id["b2-later"].result.verdict is Verdict.REJECTED
    assert [h.measurement.reading_id for h in store.history("u2")] == ["other"]


def test_replaced_reading_keeps_its_place(backend: Backend, store: StateStore):
    """A replaced reading's result changes while its position in history stays."""
    unit = UnitOfWork()
    m1, r1 = reading("u1", 1, 80.0, rid="a")
    m2, r2 = reading("u1", 2, 95.0, Verdict.REJECTED, rid="b")
    m3, r3 = reading("u1", 3, 80.4, rid="c")
    unit.readings += [(m1, r1), (m2, r2), (m3, r3)]
    store.commit(unit)
    seqs = [h.seq for h in store.history("u1")]
    accepted_b = reading("u1", 2, 95.0, rid="b")[1]
    fix = UnitOfWork()
    fix.replaced_readings.append((m2, accepted_b))
    fix.put_state(state("u1"), 0)
    store.commit(fix)
    rows = fresh(backend).history("u1")
    assert [h.seq for h in rows] == seqs
    assert rows[1].result == accepted_b
    assert rows[1].measurement == m2


def test_accepted_between_and_nearest(backend: Backend, store: StateStore):
    """accepted_between is [start, end) over accepted readings; nearest is (<= when, > when)."""
    unit = UnitOfWork()
    unit.readings += [
        reading("u1", 1, 80.0),
        reading("u1", 2, 99.0, Verdict.REJECTED),
        reading("u1", 3, 80.6),
        reading("u1", 5, 81.0),
        reading("u2", 4, 60.0),
    ]
    store.commit(unit)
    s = fresh(backend)
    assert s.accepted_between("u1", day(1), day(5)) == [(day(1), 80.0), (day(3), 80.6)]
    assert s.accepted_between("u1", day(1.5), day(5.5)) == [(day(3), 80.6), (day(5), 81.0)]
    assert s.accepted_between("u1", day(2), day(3)) == []
    assert s.nearest_accepted("u1", day(2)) == ((day(1), 80.0), (day(3), 80.6))
    assert s.nearest_accepted("u1", day(3)) == ((day(3), 80.6), (day(5), 81.0))
    assert s.nearest_accepted("u1", day(0)) == (None, (day(1), 80.0))
    assert s.nearest_accepted("u1", day(9)) == ((day(5), 81.0), None)


def test_last_good_is_replaced(backend: Backend, store: StateStore):
    """last_good returns the most recent snapshot and when it was taken."""
    assert store.last_good("u1") is None
    store.commit(full_unit("u1", version=1, expected=0))
    unit = UnitOfWork()
    s2 = state("u1", 2, 81.0)
    unit.put_state(s2, 1)
    unit.last_good["u1"] = (s2, day(40))
    store.commit(unit)
    assert fresh(backend).last_good("u1") == (s2, day(40))


def test_users_and_load_states(store: StateStore):
    """users() lists every user with a state, sorted; load_states skips unknown users."""
    unit = UnitOfWork()
    names = [f"user-{i:04d}" for i in range(600)]
    for name in reversed(names):
        unit.put_state(state(name), 0)
    store.commit(unit)
    assert store.users() == names
    got = store.load_states([*names, "ghost"])
    assert set(got) == set(names)
    assert got["user-0007"] == state("user-0007")


# -- position and results ---------------------------------------------------------------------


def test_position_never_goes_backwards(backend: Backend, store: StateStore):
    """A unit that would move an input's position back conflicts and stores nothing."""
    store.commit(full_unit("u1", position=5))
    back = full_unit("u2", position=4, first_row=10, input_id="in.csv")
    with pytest.raises(ConflictError):
        store.commit(back)
    other = fresh(backend)
    assert other.position("in.csv") == 5
    assert other.load_state("u2") is None
    assert_nothing_of(back, other)
    same = UnitOfWork(position=("in.csv", 5))
    store.commit(same)
    forward = UnitOfWork(position=("in.csv", 8))
    store.commit(forward)
    assert fresh(backend).position("in.csv") == 8


def test_a_stored_reading_is_found_by_its_id(store: StateStore):
    """stored_reading: one reading of a user, by id, with its current result."""
    unit = full_unit("u1")
    store.commit(unit)
    m, r = unit.readings[1]
    found = store.stored_reading("u1", m.reading_id)
    assert found is not None
    assert (found.measurement, found.result) == (m, r)
    assert [h.seq for h in store.history("u1")].count(found.seq) == 1
    assert store.stored_reading("u2", m.reading_id) is None  # another user's id is not it
    assert store.stored_reading("u1", "no-such-id") is None


def test_positions_are_per_input(store: StateStore):
    """Each input has its own position."""
    store.commit(UnitOfWork(position=("a.csv", 10)))
    store.commit(UnitOfWork(position=("b.csv", 2)))
    assert (store.position("a.csv"), store.position("b.csv"), store.position("c.csv")) == (10, 2, 0)


def test_results_for_input_ordered_by_row(backend: Backend, store: StateStore):
    """results_for_input yields an input's results by row number, whatever the commit order."""
    _, base = reading("u1", 1)
    unit = UnitOfWork()
    for row in (5, 1, 3):
        unit.results.append(("in.csv", row_result(base, row)))
    unit.results.append(("other.csv", row_result(base, 2)))
    store.commit(unit)
    later = UnitOfWork()
    for row in (4, 2):
        later.results.append(("in.csv", row_result(base, row)))
    invalid = Result(None, None, Verdict.INVALID, Reason.NOT_A_NUMBER, "weight 'abc'", row=6)
    later.results.append(("in.csv", invalid))
    store.commit(later)
    got = list(fresh(backend).results_for_input("in.csv"))
    assert [r.row for r in got] == [1, 2, 3, 4, 5, 6]
    assert got[-1] == invalid
    assert got[0] == row_result(base, 1)
    assert [r.row for r in store.results_for_input("other.csv")] == [2]


# -- audits and recoveries --------------------------------------------------------------------


def test_audit_filters(backend: Backend, store: StateStore):
    """audits() filters by user and by outcome (or fallback); oldest first."""
    a1 = audit("u1", "committed", 1)
    a2 = audit(
        "u2",
        "rolled_back",
        2,
        failed_operation="noise",
        reason="Q <= 0",
        fallback=ResetOutcome.FALLBACK_LAST_GOOD,
    )
    a3 = audit(
        "u1",
        "rolled_back",
        3,
        failed_operation="kalman",
        reason="nan",
        fallback=ResetOutcome.CONSERVATIVE,
    )
    store.commit(UnitOfWork(audits=[a1, a2]))
    store.commit(UnitOfWork(audits=[a3]))
    s = fresh(backend)
    assert s.audits() == [a1, a2, a3]
    assert s.audits(user_id="u1") == [a1, a3]
    assert s.audits(outcome="rolled_back") == [a2, a3]
    assert s.audits(outcome="committed") == [a1]
    assert s.audits(outcome="fallback_last_good") == [a2]
    assert s.audits(user_id="u1", outcome="rolled_back") == [a3]
    assert s.audits(user_id="u2", outcome="committed") == []
    assert s.audits(user_id="nobody") == []


def test_recovery_attempt_filters(backend: Backend, store: StateStore):
    """recovery_attempts() filters by user; oldest first."""
    c1, c2, c3 = recovery("u1", True, 1), recovery("u2", False, 2), recovery("u1", False, 3)
    store.commit(UnitOfWork(recoveries=[c1, c2]))
    store.commit(UnitOfWork(recoveries=[c3]))
    s = fresh(backend)
    assert s.recovery_attempts() == [c1, c2, c3]
    assert s.recovery_attempts("u1") == [c1, c3]
    assert s.recovery_attempts("u2") == [c2]
    assert s.recovery_attempts("nobody") == []


# =============================================================================================
# SQLite only
# =============================================================================================


def _pragmas(conn: sqlite3.Connection) -> tuple[str, int]:
    mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    sync = conn.execute("PRAGMA synchronous").fetchone()[0]
    return str(mode).lower(), int(sync)


def test_sqlite_durability_pragmas_in_force(sqlite_backend: Backend):
    """I9: after open, journal_mode is WAL and synchronous is FULL (2) on the store's connection."""
    s = sqlite_backend.open()
    assert isinstance(s, SQLiteStore)
    assert _pragmas(s.connection) == ("wal", 2)
    assert int(s.connection.execute("PRAGMA busy_timeout").fetchone()[0]) == 5000
    again = sqlite_backend.reopen()
    assert _pragmas(again.connection) == ("wal", 2)  # type: ignore[attr-defined]
    # WAL is a property of the file: a plain second connection sees it too.
    raw = sqlite_backend.raw()  # type: ignore[misc]
    assert raw.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"


def test_sqlite_integrity_ok_after_commits(sqlite_backend: Backend):
    """I5: integrity_check() is 'ok' after a series of commits and a refused one."""
    s = sqlite_backend.open()
    s.commit(full_unit("u1", version=1, expected=0))
    s.commit(full_unit("u1", version=2, expected=1, first_row=4, position=6, d=10))
    with pytest.raises(ConflictError):
        s.commit(full_unit("u1", version=3, expected=1, first_row=7, position=9, d=20))
    assert s.integrity_check() == "ok"  # type: ignore[attr-defined]
    assert sqlite_backend.reopen().integrity_check() == "ok"  # type: ignore[attr-defined]


def test_sqlite_refuses_random_bytes_file(tmp_path: Path):
    """B5: a file of random bytes is refused at open and left byte-for-byte unchanged."""
    path = tmp_path / "junk.db"
    data = random.Random(20250301).randbytes(8192)
    path.write_bytes(data)
    with pytest.raises(StoreOpenError):
        SQLiteStore(path)
    assert path.read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.db"]


def test_sqlite_refuses_text_file(tmp_path: Path):
    """B5: a text file (say, the CSV given in the wrong argument) is refused and unchanged."""
    path = tmp_path / "input.csv"
    data = b"id,user_id,timestamp,weight\n1,u1,2025-01-01,80\n"
    path.write_bytes(data)
    with pytest.raises(StoreOpenError):
        SQLiteStore(path)
    assert path.read_bytes() == data


def test_sqlite_refuses_foreign_database(tmp_path: Path):
    """B5: another application's SQLite database is refused and left byte-for-byte unchanged."""
    path = tmp_path / "other-app.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE bookmarks (id INTEGER PRIMARY KEY, url TEXT)")
    conn.execute("INSERT INTO bookmarks (url) VALUES ('https://example.org')")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(StoreOpenError):
        SQLiteStore(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other-app.db"]
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT url FROM bookmarks").fetchall() == [("https://example.org",)]
    assert conn.execute("PRAGMA journal_mode").fetchone()[0].lower() == "delete"
    conn.close()


def test_sqlite_refuses_foreign_application_id(tmp_path: Path):
    """B5: an empty SQLite file stamped with another application_id is refused."""
    path = tmp_path / "stamped.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA application_id = 12345")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(StoreOpenError):
        SQLiteStore(path)
    assert path.read_bytes() == before


def test_sqlite_missing_file_without_create(tmp_path: Path):
    """B5: opening a missing file with create=False raises StoreOpenError and creates nothing."""
    path = tmp_path / "absent.db"
    with pytest.raises(StoreOpenError):
        SQLiteStore(path, create=False)
    assert list(tmp_path.iterdir()) == []


def test_sqlite_directory_refused(tmp_path: Path):
    """A directory given as the database path is a StoreOpenError."""
    with pytest.raises(StoreOpenError):
        SQLiteStore(tmp_path)


def test_sqlite_storage_full_stores_nothing_then_recovers(sqlite_backend: Backend):
    """A page limit hit mid-unit raises StorageFullError, stores nothing; the unit commits later."""
    s = sqlite_backend.open()
    assert isinstance(s, SQLiteStore)
    s.commit(full_unit("u0", version=1, expected=0, input_id="warm.csv"))
    pages = s.connection.execute("PRAGMA page_count").fetchone()[0]
    s.connection.execute(f"PRAGMA max_page_count = {pages}")
    unit = full_unit("u1", version=1, expected=0, position=400)
    for i in range(400):
        m, r = reading("u1", 10 + i / 24, 80.0 + i / 1000, source="patient-device" + "x" * 200)
        unit.readings.append((m, r))
        unit.results.append(("in.csv", row_result(r, 10 + i)))
    with pytest.raises(StorageFullError):
        s.commit(unit)
    other = sqlite_backend.reopen()
    assert other.load_state("u1") is None
    assert other.position("in.csv") == 0
    assert_nothing_of(unit, other)
    assert other.load_state("u0") is not None
    s.connection.execute("PRAGMA max_page_count = 1073741823")
    s.commit(unit)
    other = sqlite_backend.reopen()
    assert other.load_state("u1") == unit.states["u1"]
    assert other.position("in.csv") == 400
    assert len(other.history("u1")) == 403
    assert s.integrity_check() == "ok"


def test_sqlite_busy_writer_then_retry(sqlite_backend: Backend):
    """A lock held past busy_timeout raises StoreBusyError, stores nothing; a retry succeeds."""
    path = sqlite_backend.path
    sqlite_backend.open().close()  # create the schema
    with SQLiteStore(path, busy_timeout_ms=50) as s:  # type: ignore[arg-type]
        blocker = sqlite_backend.raw()  # type: ignore[misc]
        blocker.execute("PRAGMA busy_timeout = 0")
        blocker.execute("BEGIN IMMEDIATE")
        unit = full_unit()
        with pytest.raises(StoreBusyError) as info:
            s.commit(unit)
        assert info.value.retryable
        blocker.execute("ROLLBACK")
        other = sqlite_backend.reopen()
        assert other.load_state("u1") is None
        assert_nothing_of(unit, other)
        s.commit(unit)
        assert sqlite_backend.reopen().load_state("u1") == unit.states["u1"]


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param({"P": ((-1.0, 0.0), (0.0, 0.0009))}, id="negative-P00"),
        pytest.param({"P": ((0.4, 0.0), (0.0, -0.1))}, id="negative-P11"),
        pytest.param({"P": ((0.4, 0.5), (-0.5, 0.0009))}, id="asymmetric"),
        pytest.param({"P": ((1.0, 2.0), (2.0, 1.0))}, id="not-positive-definite"),
        pytest.param({"P": ((math.nan, 0.0), (0.0, 0.0009))}, id="nan-P00"),
        pytest.param({"x": (math.nan, 0.0)}, id="nan-weight"),
        pytest.param({"x": (-80.0, 0.0)}, id="negative-weight"),
    ],
)
def test_sqlite_constraints_refuse_invalid_state(sqlite_backend: Backend, bad: dict):
    """I4: CHECK constraints refuse a NaN / non-PD state even if Python validation is bypassed."""
    from dataclasses import replace

    s = sqlite_backend.open()
    good = state("u1")
    broken = replace(good, kalman=replace(good.kalman, **bad))  # type: ignore[arg-type]
    unit = full_unit("u1")
    unit.states["u1"] = broken
    with pytest.raises(StorageError) as info:
        s.commit(unit)
    assert not isinstance(info.value, ConflictError)
    other = sqlite_backend.reopen()
    assert other.load_state("u1") is None
    assert other.position("in.csv") == 0
    assert_nothing_of(unit, other)
    # The same refusal guards the last-known-good table.
    lg = UnitOfWork()
    lg.last_good["u1"] = (broken, day(1))
    with pytest.raises(StorageError):
        s.commit(lg)
    assert sqlite_backend.reopen().last_good("u1") is None


# -- versions, rows and replacements the stores must refuse ------------------------------------


def test_version_that_does_not_move_forward_conflicts(backend: Backend, store: StateStore):
    """A state whose version is not above the one it replaces is refused (I4), nothing stored."""
    store.commit(full_unit("u1", version=3, expected=0))
    backwards = full_unit("u1", version=2, expected=3, position=9, first_row=10, d=10.0)
    with pytest.raises(ConflictError):
        store.commit(backwards)
    assert_nothing_of(backwards, fresh(backend))
    assert fresh(backend).load_state("u1").version == 3  # type: ignore[union-attr]


def test_unknown_user_with_a_nonzero_expected_version_conflicts(
    backend: Backend, store: StateStore
):
    """A unit that believes a user exists (expected version 4) when none is stored is refused."""
    unit = full_unit("ghost", version=5, expected=4)
    with pytest.raises(ConflictError):
        store.commit(unit)
    assert fresh(backend).load_state("ghost") is None
    assert_nothing_of(unit, fresh(backend))


def test_second_result_for_the_same_input_row_conflicts(backend: Backend, store: StateStore):
    """Each (input, row) has one result: a second unit writing row 1 again stores nothing."""
    store.commit(full_unit("u1", version=1, expected=0))
    again = full_unit("u2", version=1, expected=0, position=9, first_row=1, d=20.0)
    with pytest.raises(ConflictError):
        store.commit(again)
    assert fresh(backend).load_state("u2") is None


def test_replacing_a_reading_that_is_not_stored_conflicts(backend: Backend, store: StateStore):
    """A re-issued result for an unknown reading fails the whole unit."""
    m, r = reading("u1", 0.0, 80.0)
    unit = full_unit("u1", version=1, expected=0)
    unit.replaced_readings.append((m, r))
    with pytest.raises(ConflictError):
        store.commit(unit)
    assert fresh(backend).load_state("u1") is None
