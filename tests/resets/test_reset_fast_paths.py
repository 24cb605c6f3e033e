"""The reset path's shortcuts (issue 11) say exactly what the long way says.

Each shortcut answers only "certainly fine"; anything else goes the long way, which names the
faults. So, for states with every kind of fault:

* the validator with its shortcuts gives the same list of problems as with them switched off;
* the breaker's one-record success equals the two ``replace`` calls it stands for;
* the manager's remembered constants equal what it computes;
* ``require_valid`` leaves the transaction as ``save_checkpoint`` + ``validate_checkpoint`` +
  ``mark_completed`` do.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from weightstream.config import Config, FilterConfig, ResetConfig
from weightstream.errors import ResetValidationError
from weightstream.model import (
    AdaptationState,
    BufferedReading,
    KalmanState,
    ResetType,
    UserState,
)
from weightstream.resets import breaker as breaker_module
from weightstream.resets import validator as validator_module
from weightstream.resets.breaker import BreakerRecord, CircuitState
from weightstream.resets.manager import ResetManager
from weightstream.resets.transaction import ResetTransaction
from weightstream.resets.validator import (
    ResetOperation,
    StateValidator,
    adaptation_snapshot,
    buffer_snapshot,
    kalman_snapshot,
    persist_snapshot,
)
from weightstream.testing import T0, measurement

NAN, INF = math.nan, math.inf
V = StateValidator()


@contextmanager
def long_way() -> Iterator[None]:
    """Every shortcut of the validator switched off: only the fault-naming path runs."""
    no = mock.Mock(return_value=False)
    with (
        mock.patch.object(validator_module, "_adaptation_ok", no),
        mock.patch.object(validator_module, "_adaptation_snapshot_ok", no),
        mock.patch.object(validator_module, "_buffer_ok", no),
        mock.patch.object(validator_module, "_forward", no),
        mock.patch.object(StateValidator, "_fast_kalman_ok", no),
    ):
        yield


def both_ways(state: Any, operation: ResetOperation) -> tuple[list[str], list[str]]:
    short = V.problems(state, operation)
    with long_way():
        named = V.problems(state, operation)
    return short, named


# -- states with every kind of fault --------------------------------------------------------------

_NUMBER = st.one_of(
    st.sampled_from([0.0, -0.0, 1.0, -1.0, 0.5, 20.0, 80.0, 100.0, 101.0, 500.0, 1e308]),
    st.sampled_from([NAN, INF, -INF]),
    st.floats(-600.0, 600.0),
)
_TIME = st.one_of(st.none(), st.integers(-3, 3).map(lambda d: T0 + timedelta(days=d)))
_AWARE = st.integers(-3, 3).map(lambda d: T0 + timedelta(days=d))
_ODD = st.sampled_from([None, "x", 3, (), datetime(2025, 1, 1)])  # naive: not comparable


def _reading(when: datetime, weight: float) -> BufferedReading:
    return BufferedReading(when, weight, "patient-device", "kg", weight, "r", 0.0)


_BUFFER = st.lists(st.tuples(_AWARE, _NUMBER), max_size=6).map(
    lambda pairs: tuple(_reading(t, w) for t, w in pairs)
)
_ODD_BUFFER = st.one_of(
    _BUFFER,
    _BUFFER.map(list),
    _BUFFER.map(lambda b: (*b, "not a reading")),
    _BUFFER.map(lambda b: (*b, _reading(datetime(2025, 1, 1), 80.0))),
    st.just((_reading(T0, 80.0),) * 30),
)
_ADAPTATION = st.builds(
    AdaptationState,
    is_adapting=st.booleans(),
    adaptation_start=st.one_of(_TIME, _ODD),
    adaptation_factor=st.one_of(_NUMBER, _ODD, st.integers(-1, 101)),
    measurements_since_reset=st.one_of(st.integers(-2, 5), _ODD, _NUMBER),
    reset_type=st.one_of(st.none(), st.sampled_from(list(ResetType)), st.just("bogus")),
)
_MATRIX = st.one_of(
    st.tuples(st.tuples(_NUMBER, _NUMBER), st.tuples(_NUMBER, _NUMBER)),
    st.just(((1.0, 0.0),)),
    st.just(((1.0, 0.0, 0.0), (0.0, 1.0, 0.0))),
    st.just("xx"),
)
_KALMAN = st.builds(
    KalmanState,
    x=st.one_of(st.tuples(_NUMBER, _NUMBER), st.just((80.0, 0.0, 0.0)), st.just((80.0,))),
    P=st.one_of(_MATRIX, st.just(((1.0, 0.0), (0.0, 0.01)))),
    timestamp=_AWARE,
)


@st.composite
def _user(draw: st.DrawFn) -> UserState:
    return UserState(
        user_id=draw(st.sampled_from(["u1", "u2"])),
        kalman=draw(st.one_of(st.none(), _KALMAN)),
        adaptation=draw(_ADAPTATION),
        buffer=draw(_ODD_BUFFER),  # type: ignore[arg-type]
        last_accepted_at=draw(_TIME),
        last_event_at=draw(_TIME),
        last_reset_at=draw(_TIME),
        version=draw(st.integers(-1, 4)),
    )


# -- the validator ---------------------------------------------------------------------------------


_GOOD_Q = ((0.1, 0.0), (0.0, 0.01))


def _one_off(m: tuple[tuple[float, float], tuple[float, float]]) -> Any:
    """``m`` with one entry replaced by any number."""
    return st.tuples(st.integers(0, 1), st.integers(0, 1), _NUMBER).map(
        lambda c: tuple(
            tuple(c[2] if (i, j) == (c[0], c[1]) else v for j, v in enumerate(row))
            for i, row in enumerate(m)
        )
    )


@settings(max_examples=400, deadline=None, derandomize=True)
@given(
    st.one_of(_KALMAN, st.builds(KalmanState, st.just((80.0, 0.0)), _one_off(_GOOD_Q), _AWARE)),
    st.one_of(st.just(_GOOD_Q), _one_off(_GOOD_Q), _MATRIX),
    st.one_of(st.just(0.5), _NUMBER),
    st.booleans(),
)
def test_kalman_checkpoints_get_the_same_verdict_both_ways(
    k: KalmanState, q: Any, r: float, odd_f: bool
) -> None:
    """A Kalman checkpoint: the same problems with and without the shortcut."""
    snap = kalman_snapshot(k, q, r)
    if odd_f:
        snap = {**snap, "F": ((1.0, NAN), (0.0, 1.0)), "H": [[1.0, 0.0]]}
    short, named = both_ways(snap, ResetOperation.KALMAN_RESET)
    assert short == named


_K = KalmanState((80.0, 0.0), ((1.0, 0.0), (0.0, 0.01)), T0)
_SINGLE_FAULTS = [
    *(
        {
            "Q": tuple(
                tuple(v if (i, j) == at else q for j, q in enumerate(row))
                for i, row in enumerate(_GOOD_Q)
            )
        }
        for at in ((0, 0), (0, 1), (1, 0), (1, 1))
        for v in ((0.0, -1.0, NAN, INF) if at[0] == at[1] else (NAN, -INF))
    ),
    *({"R": ((v,),)} for v in (0.0, -1.0, NAN, INF)),
    {"F": ((1.0, 1.0), (0.0, NAN))},
    {"H": ((INF, 0.0),)},
    {"H": ((1.0, 0.0, 0.0),)},
    {"x": (80.0, 6.0)},
    {"P": ((1.0, 0.2), (0.1, 1.0))},
]


@pytest.mark.parametrize("fault", _SINGLE_FAULTS)
def test_each_single_kalman_fault_is_named_the_same_both_ways(fault: dict[str, Any]) -> None:
    """One bad component in an otherwise valid checkpoint: refused, and named the same way."""
    snap = {**kalman_snapshot(_K, _GOOD_Q, 0.5), **fault}
    short, named = both_ways(snap, ResetOperation.KALMAN_RESET)
    assert short == named and short


@settings(max_examples=300, deadline=None, derandomize=True)
@given(_ADAPTATION, st.one_of(_AWARE, st.none()))
def test_adaptation_checkpoints_get_the_same_verdict_both_ways(
    a: AdaptationState, reading: datetime | None
) -> None:
    """An adaptation checkpoint (snapshot or bare state): the same problems both ways."""
    for state in (adaptation_snapshot(a, reading) if reading else a, a):  # type: ignore[arg-type]
        short, named = both_ways(state, ResetOperation.ADAPTATION_CREATE)
        assert short == named


@settings(max_examples=300, deadline=None, derandomize=True)
@given(_ODD_BUFFER, st.integers(0, 40))
def test_buffer_checkpoints_get_the_same_verdict_both_ways(buffer: Any, size: int) -> None:
    """A buffer checkpoint: the same problems both ways, under any bound."""
    short, named = both_ways(buffer_snapshot(buffer, size), ResetOperation.BUFFER_UPDATE)
    assert short == named


@settings(max_examples=400, deadline=None, derandomize=True)
@given(st.one_of(st.none(), _user()), _user())
def test_persist_checkpoints_get_the_same_verdict_both_ways(
    old: UserState | None, new: UserState
) -> None:
    """A whole state to persist, and a loaded one: the same problems (or error) both ways."""

    def outcome(fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception as exc:  # noqa: BLE001 - the comparison is the point
            return type(exc)

    short = outcome(V.problems, persist_snapshot(old, new), ResetOperation.STATE_PERSIST)
    short_loaded = outcome(V.user_state_problems, new)
    with long_way():
        named = outcome(V.problems, persist_snapshot(old, new), ResetOperation.STATE_PERSIST)
        named_loaded = outcome(V.user_state_problems, new)
    assert short == named
    assert short_loaded == named_loaded


def _usual_reset() -> tuple[ResetManager, Any, UserState]:
    """A hard reset's manager, reading and new state, as the sequence builds them."""
    manager = ResetManager(Config())
    m = measurement(80.0, 0)
    k = manager.apply_reset(None, ResetType.HARD, m)
    a = manager.create_adaptation_state(ResetType.HARD, m.timestamp)
    buffer = manager.buffer_after_reset((), ResetType.HARD, m)
    return manager, m, UserState(user_id="u1", kalman=k, adaptation=a, buffer=buffer, version=1)


_WEIGHT = st.floats(20.0, 500.0)


@st.composite
def _passing(draw: st.DrawFn) -> tuple[Any, ...]:
    """A reset's Kalman state, adaptation and buffer that pass their checkpoints, with the
    reading's time and the buffer's bound they were checked with."""
    p00, p11 = draw(st.floats(1e-3, 100.0)), draw(st.floats(1e-4, 1.0))
    bound = 0.99 * math.sqrt(p00 * p11)
    p01 = draw(st.floats(-bound, bound))
    k = KalmanState((draw(_WEIGHT), draw(st.floats(-5.0, 5.0))), ((p00, p01), (p01, p11)), T0)
    adapting = draw(st.booleans())
    types = st.sampled_from(list(ResetType))
    start = draw(_AWARE if adapting else st.one_of(st.none(), _AWARE))
    a = AdaptationState(
        is_adapting=adapting,
        adaptation_start=start,
        adaptation_factor=draw(st.floats(1.0, 100.0)),
        measurements_since_reset=draw(st.integers(0, 5)),
        reset_type=draw(types if adapting else st.one_of(st.none(), types)),
    )
    reading = draw(_AWARE) if start is None else start + timedelta(days=draw(st.integers(0, 3)))
    buffer = tuple(_reading(t, draw(_WEIGHT)) for t in sorted(draw(st.lists(_AWARE, max_size=6))))
    return k, a, buffer, reading, draw(st.integers(len(buffer), 40))


@settings(max_examples=400, deadline=None, derandomize=True)
@given(st.one_of(st.none(), _user()), _user(), _passing(), st.booleans())
def test_a_persist_checkpoint_after_passed_checks_gets_the_full_verdict(
    old: UserState | None, drawn: UserState, parts: tuple[Any, ...], copied: bool
) -> None:
    """Components that passed a reset's earlier checkpoints are not checked again at persist:
    the verdict is the full check's, whatever the rest of the state (its version and times)
    and the state before. A component that is not the checked value itself (a copy) is
    checked in full."""
    k, a, buffer, reading, size = parts
    assert not V.problems(kalman_snapshot(k, _GOOD_Q, 0.5), ResetOperation.KALMAN_RESET)
    assert not V.problems(adaptation_snapshot(a, reading), ResetOperation.ADAPTATION_CREATE)
    assert not V.problems(buffer_snapshot(buffer, size), ResetOperation.BUFFER_UPDATE)
    new = dataclasses.replace(drawn, kalman=k, adaptation=a, buffer=buffer)
    checked = (k, a, list(buffer) if copied else buffer)
    full = V.problems(persist_snapshot(old, new), ResetOperation.STATE_PERSIST)
    skipping = V.problems(persist_snapshot(old, new, checked), ResetOperation.STATE_PERSIST)  # type: ignore[arg-type]
    assert skipping == full


def test_a_persist_checkpoint_skips_only_the_checked_components() -> None:
    """The usual reset's persist check takes the skip; a state holding another buffer or
    adaptation than the checked ones is checked in full, and its fault named."""
    _, _, new = _usual_reset()
    k, a, buffer = new.kalman, new.adaptation, new.buffer
    assert k is not None
    with mock.patch.object(
        validator_module, "_buffer_ok", side_effect=AssertionError("buffer checked again")
    ):
        assert V.problems(persist_snapshot(None, new, (k, a, buffer)), "state_persist") == []
    bad_buffer = (*buffer, _reading(T0 - timedelta(days=1), 80.0))  # times not ascending
    bad = dataclasses.replace(new, buffer=bad_buffer)
    assert "buffer times are not ascending" in V.problems(
        persist_snapshot(None, bad, (k, a, buffer)), ResetOperation.STATE_PERSIST
    )
    bad = dataclasses.replace(new, adaptation=dataclasses.replace(a, adaptation_factor=1e3))
    assert any(
        "adaptation factor" in p
        for p in V.problems(persist_snapshot(None, bad, (k, a, buffer)), "state_persist")
    )
    three = KalmanState((80.0, 0.0, 0.0), ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)), T0)
    bad = dataclasses.replace(new, kalman=three)  # a checked filter of another size: refused
    assert V.problems(persist_snapshot(None, bad, (three, a, buffer)), "state_persist")


def test_an_operation_is_found_by_its_text() -> None:
    """``problems`` takes an operation or its text, and names an unknown one."""
    snap = buffer_snapshot((), 20)
    assert V.problems(snap, "buffer_update") == V.problems(snap, ResetOperation.BUFFER_UPDATE)
    assert V.problems(snap, "no_such_step") == ["no validator for operation 'no_such_step'"]
    assert V.problems(snap, ["buffer_update"]) == [  # type: ignore[arg-type]
        "no validator for operation ['buffer_update']"
    ]


def test_the_shortcuts_take_the_usual_reset() -> None:
    """A reset as the sequence builds it passes every shortcut (else they would save nothing)."""
    manager, m, new = _usual_reset()
    k, a, buffer = new.kalman, new.adaptation, new.buffer
    assert k is not None
    q, r = manager.reset_noise(ResetType.HARD), manager.measurement_var(m.source)
    assert V._fast_kalman_ok(kalman_snapshot(k, q, r))
    assert validator_module._adaptation_snapshot_ok(adaptation_snapshot(a, m.timestamp))
    assert validator_module._buffer_ok(buffer, 20)
    later = dataclasses.replace(new, version=2, last_event_at=m.timestamp)
    assert validator_module._forward(new, later)
    with mock.patch.object(V, "_kalman", side_effect=AssertionError("long way taken")):
        assert V.user_state_problems(new) == []


# -- the breaker -----------------------------------------------------------------------------------

_COUNT = st.integers(0, 10**6)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    st.builds(
        BreakerRecord,
        state=st.sampled_from(list(CircuitState)),
        failure_count=_COUNT,
        success_count=_COUNT,
        opened_at=st.one_of(st.none(), st.floats(0, 1e6)),
        probe_started_at=st.one_of(st.none(), st.floats(0, 1e6)),
        generation=_COUNT,
        total_successes=_COUNT,
        total_failures=_COUNT,
        total_rejections=_COUNT,
        total_probe_timeouts=_COUNT,
        total_stale=_COUNT,
    )
)
def test_a_success_record_is_the_two_replaces_it_stands_for(record: BreakerRecord) -> None:
    """The one record built for a success in CLOSED equals replace(+1 success, 0 failures)."""
    expected = dataclasses.replace(
        dataclasses.replace(record, total_successes=record.total_successes + 1),
        failure_count=0,
    )
    assert breaker_module._closed_success(record) == expected


# -- the manager -----------------------------------------------------------------------------------


def test_remembered_reset_constants_equal_the_computed_ones() -> None:
    """P0, Q(1 day), the boost and R per source are what the manager would compute afresh."""
    config = Config(
        filter=FilterConfig(initial_weight_var=3.0, q_weight=0.02),
        resets=ResetConfig(buffer_size=7),
    )
    manager = ResetManager(config)
    for t in ResetType:
        assert manager.reset_covariance(t) == manager._reset_covariance(t)
        assert manager.reset_noise(t) == manager._reset_noise(t)
        assert manager.reset_noise(str(t)) == manager._reset_noise(t)  # type: ignore[arg-type]
        boost = config.resets.boost(t)
        a = manager.create_adaptation_state(t, T0)
        assert a.adaptation_factor == boost.q_multiplier
    sources = [f"source-{i}" for i in range(300)] + ["patient-device", "questionnaire"]
    for _ in range(2):  # first seen, then remembered (or not: past the bound)
        for source in sources:
            expected = config.filter.measurement_var * config.sources.multiplier(source)
            assert manager.measurement_var(source) == expected
    with pytest.raises(KeyError):
        manager.reset_noise("bogus")  # type: ignore[arg-type]


# -- the transaction -------------------------------------------------------------------------------


@pytest.mark.parametrize("valid", [True, False])
def test_require_valid_is_save_validate_and_mark(valid: bool) -> None:
    """require_valid leaves checkpoints, failure and completed operations as the three calls do."""
    state = kalman_snapshot(
        KalmanState((80.0, 0.0), ((1.0, 0.0), (0.0, 0.01 if valid else -1.0)), T0),
        ((0.1, 0.0), (0.0, 0.01)),
        0.5,
    )
    op = ResetOperation.KALMAN_RESET
    one, three = ResetTransaction("u1"), ResetTransaction("u1")
    try:
        one.require_valid(op, state)
    except ResetValidationError as exc:
        assert not valid and "P is not positive definite" in str(exc)
    three.save_checkpoint(op, state)
    if three.validate_checkpoint(op):
        three.mark_completed(op)
    for txn in (one, three):
        assert [(c.operation, c.state, c.validation_passed, c.problems) for c in txn.checkpoints]
    assert [(c.operation, c.state, c.validation_passed, c.problems) for c in one.checkpoints] == [
        (c.operation, c.state, c.validation_passed, c.problems) for c in three.checkpoints
    ]
    for name in ("failed", "failure_reason", "failed_operation", "completed_operations"):
        assert getattr(one, name) == getattr(three, name)
    assert one.audit().checkpoints == three.audit().checkpoints == (("kalman_reset", valid),)


@pytest.mark.parametrize("valid", [True, False])
@pytest.mark.parametrize("op", list(ResetOperation))
def test_check_is_require_valid_of_the_snapshot(op: ResetOperation, valid: bool) -> None:
    """The sequence's ``check(op, thunk)`` leaves the transaction as ``require_valid(op,
    thunk())`` does: checkpoints, verdicts, failure, completed operations, audit pairs."""
    k = KalmanState((80.0, 0.0), ((1.0, 0.0), (0.0, 0.01 if valid else -1.0)), T0)
    adaptation = AdaptationState(True, T0, 10.0 if valid else 1000.0, 0, ResetType.HARD)
    entry = BufferedReading(T0, 80.0 if valid else NAN, "patient-device")
    new = UserState("u1", k, adaptation, (entry,), version=1)
    state = {
        ResetOperation.KALMAN_RESET: kalman_snapshot(k, ((0.1, 0.0), (0.0, 0.01)), 0.5),
        ResetOperation.ADAPTATION_CREATE: adaptation_snapshot(adaptation, T0),
        ResetOperation.BUFFER_UPDATE: buffer_snapshot((entry,), 20),
        ResetOperation.STATE_PERSIST: persist_snapshot(None, new),
    }[op]
    checked, required = ResetTransaction("u1"), ResetTransaction("u1")
    outcomes = []
    for run in (
        lambda: checked.check(op, lambda: state),
        lambda: required.require_valid(op, state),
    ):
        try:
            run()
            outcomes.append(None)
        except ResetValidationError as exc:
            outcomes.append(str(exc))
    assert (outcomes[0] is None) is valid and outcomes[0] == outcomes[1]
    assert [
        (c.operation, c.state, c.validation_passed, c.problems) for c in checked.checkpoints
    ] == [(c.operation, c.state, c.validation_passed, c.problems) for c in required.checkpoints]
    for name in ("failed", "failure_reason", "failed_operation", "completed_operations"):
        assert getattr(checked, name) == getattr(required, name)
    assert checked.audit().checkpoints == required.audit().checkpoints == ((op.value, valid),)
