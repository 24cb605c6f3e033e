"""StateValidator: every check names its fault; valid states pass; it never crashes."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from weightstream.model import AdaptationState, BufferedReading, KalmanState, ResetType, UserState
from weightstream.resets.validator import (
    ResetOperation,
    StateValidator,
    adaptation_snapshot,
    buffer_snapshot,
    kalman_snapshot,
    persist_snapshot,
)
from weightstream.testing import T0

V = StateValidator()
K = ResetOperation.KALMAN_RESET
A = ResetOperation.ADAPTATION_CREATE
B = ResetOperation.BUFFER_UPDATE
S = ResetOperation.STATE_PERSIST
NAN, INF = float("nan"), float("inf")


def kal(**over: Any) -> dict[str, Any]:
    base = {
        "x": [80.0, 0.01],
        "P": [[2.0, 0.01], [0.01, 0.01]],
        "F": [[1.0, 1.0], [0.0, 1.0]],
        "H": [[1.0, 0.0]],
        "Q": [[0.02, 0.0], [0.0, 2e-5]],
        "R": [[0.64]],
    }
    return {**base, **over}


def test_valid_kalman_passes() -> None:
    """A well-formed 2-state filter checkpoint has no problems."""
    assert V.problems(kal(), K) == []


def test_shapes_generalise_to_any_n() -> None:
    """A 1-state and a 3-state filter validate with their own n (the plan assumed 1x1)."""
    assert V.problems({"x": [80.0], "P": [[1.0]], "F": [[1.0]], "H": [[1.0]],
                       "Q": [[0.1]], "R": [[1.0]]}, K) == []
    eye3 = [[1.0 if i == j else 0.0 for j in range(3)] for i in range(3)]
    assert V.problems({"x": [80.0, 0.0, 0.0], "P": eye3, "F": eye3, "H": [[1.0, 0.0, 0.0]],
                       "Q": eye3, "R": [[1.0]]}, K) == []


@pytest.mark.parametrize(
    ("over", "expected"),
    [
        ({"x": [NAN, 0.0]}, "x contains NaN or inf"),
        ({"x": [80.0, INF]}, "x contains NaN or inf"),
        ({"P": [[INF, 0.0], [0.0, 1.0]]}, "P contains NaN or inf"),
        ({"Q": [[NAN, 0.0], [0.0, 1.0]]}, "Q contains NaN or inf"),
        ({"R": [[INF]]}, "R contains NaN or inf"),
        ({"x": [80.0, 0.0, 0.0]}, "P has the wrong shape (expected 3x3)"),
        ({"P": [[1.0, 0.0]]}, "P has the wrong shape (expected 2x2)"),
        ({"F": [[1.0]]}, "F has the wrong shape (expected 2x2)"),
        ({"H": [[1.0], [0.0]]}, "H has the wrong shape (expected 1x2)"),
        ({"Q": [[1.0, 0.0, 0.0]] * 3}, "Q has the wrong shape (expected 2x2)"),
        ({"R": [[1.0, 0.0]]}, "R has the wrong shape (expected 1x1)"),
        ({"P": [[-1.0, 0.0], [0.0, 1.0]]}, "P is not positive definite"),
        ({"P": [[1.0, 2.0], [2.0, 1.0]]}, "P is not positive definite"),
        ({"P": [[0.0, 0.0], [0.0, 1.0]]}, "P is not positive definite"),
        ({"P": [[1.0, 0.5], [-0.5, 1.0]]}, "P is not symmetric"),
        ({"Q": [[0.0, 0.0], [0.0, 1.0]]}, "process noise Q has a non-positive diagonal"),
        ({"Q": [[0.1, 0.0], [0.0, -1.0]]}, "process noise Q has a non-positive diagonal"),
        ({"R": [[0.0]]}, "measurement noise R is not positive"),
        ({"R": [[-0.64]]}, "measurement noise R is not positive"),
        ({"x": [5.0, 0.0]}, "weight level outside the physiological range"),
        ({"x": [80.0, 9.0]}, "trend outside the plausible range"),
        ({"x": "abc"}, "x is not a vector"),
        ({"P": "not a matrix"}, "P has the wrong shape (expected 2x2)"),
    ],
)
def test_kalman_faults_are_named(over: dict[str, Any], expected: str) -> None:
    """Each corrupted Kalman component is rejected with its own message."""
    assert expected in V.problems(kal(**over), K)


def test_missing_kalman_components_are_each_named() -> None:
    """Every missing matrix is listed."""
    assert V.problems({"x": [80.0], "F": [[1.0]]}, K) == [
        "missing Kalman component P", "missing Kalman component H",
        "missing Kalman component Q", "missing Kalman component R",
    ]


def test_kalman_state_object_and_snapshot_helper() -> None:
    """A KalmanState and the processor's snapshot helper validate; a NaN inside is caught."""
    k = KalmanState(x=(80.0, 0.0), P=((2.0, 0.0), (0.0, 0.01)), timestamp=T0)
    assert V.problems(k, K) == []
    assert V.problems(kalman_snapshot(k, ((0.02, 0.0), (0.0, 2e-5)), 0.64), K) == []
    assert V.problems(replace(k, x=(NAN, 0.0)), K) == ["x contains NaN or inf"]
    assert V.problems(replace(k, x=(80.0, 0.0, 1.0)), K) == ["x is not a 2-vector"]


def adapt(**over: Any) -> AdaptationState:
    base = AdaptationState(True, T0, 5.0, 0, ResetType.HARD)
    return replace(base, **over)


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (adapt(adaptation_factor=100.5), "adaptation factor outside [1, 100]"),
        (adapt(adaptation_factor=0.99), "adaptation factor outside [1, 100]"),
        (adapt(adaptation_factor=NAN), "adaptation factor outside [1, 100]"),
        (adapt(measurements_since_reset=-1), "negative readings-since-reset count"),
        (adapt(reset_type="sideways"), "unknown reset type"),  # type: ignore[arg-type]
        (adapt(reset_type=None), "adapting without a reset type and start"),
        (adapt(adaptation_start=None), "adapting without a reset type and start"),
    ],
)
def test_adaptation_faults_are_named(state: AdaptationState, expected: str) -> None:
    """Each corrupted adaptation field is rejected with its own message."""
    assert expected in V.problems(adaptation_snapshot(state, T0), A)


def test_adaptation_bounds_are_inclusive_and_start_not_after_reading() -> None:
    """Factors 1 and 100 pass; a start after the reading fails."""
    assert V.problems(adaptation_snapshot(adapt(adaptation_factor=1.0), T0), A) == []
    assert V.problems(adaptation_snapshot(adapt(adaptation_factor=100.0), T0), A) == []
    late = adapt(adaptation_start=T0 + timedelta(seconds=1))
    assert V.problems(adaptation_snapshot(late, T0), A) == ["adaptation starts after the reading"]
    assert V.problems({"is_adapting": True}, A)[0] == "missing adaptation field adaptation_start"


def buf(n: int, step_days: float = 1.0) -> tuple[BufferedReading, ...]:
    return tuple(BufferedReading(T0 + timedelta(days=i * step_days), 80.0, "d") for i in range(n))


def test_buffer_checks() -> None:
    """The buffer must respect its bound, ascend in time, and hold finite positive weights."""
    assert V.problems(buffer_snapshot(buf(20), 20), B) == []
    assert V.problems(buffer_snapshot(buf(21), 20), B) == ["buffer exceeds its bound of 20"]
    assert V.problems(buffer_snapshot(buf(1001), 5000), B) == ["buffer exceeds its bound of 1000"]
    assert V.problems(buffer_snapshot(buf(3, -1.0), 20), B) == ["buffer times are not ascending"]
    bad = (*buf(2), BufferedReading(T0 + timedelta(days=5), NAN, "d"))
    assert V.problems(buffer_snapshot(bad, 20), B) == ["buffer holds a non-finite or non-positive weight"]
    assert V.problems({"buffer": [1, 2]}, B) == ["buffer holds something other than readings"]
    assert V.problems({"nope": []}, B) == ["missing buffer"]


def user(version: int = 3, **over: Any) -> UserState:
    k = KalmanState(x=(80.0, 0.0), P=((1.0, 0.0), (0.0, 0.01)), timestamp=T0)
    base = UserState(
        user_id="u1", kalman=k, buffer=buf(1), last_accepted_at=T0, last_event_at=T0,
        last_reset_at=T0, accepted_count=1, version=version,
    )
    return replace(base, **over)


def test_persist_requires_version_plus_one() -> None:
    """The new state's version is exactly the old one plus one (a first state is version 1)."""
    old = user(3)
    assert V.problems(persist_snapshot(old, user(4)), S) == []
    assert V.problems(persist_snapshot(None, user(1)), S) == []
    for bad in (3, 5, 2):
        assert "state version does not go up by exactly one" in V.problems(
            persist_snapshot(old, user(bad)), S
        )


def test_persist_refuses_times_going_backwards_and_foreign_users() -> None:
    """No persisted time may go backwards, and the state must belong to the same user."""
    old = user(3)
    earlier = T0 - timedelta(days=1)
    for name in ("last_event_at", "last_accepted_at", "last_reset_at"):
        new = user(4, **{name: earlier})
        assert f"{name} goes backwards" in V.problems(persist_snapshot(old, new), S)
        assert f"{name} goes backwards" in V.problems(
            persist_snapshot(old, user(4, **{name: None})), S
        )
    assert "state belongs to another user" in V.problems(
        persist_snapshot(old, user(4, user_id="u2")), S
    )
    back = replace(old.kalman, timestamp=earlier)  # type: ignore[arg-type]
    assert "filter time goes backwards" in V.problems(persist_snapshot(old, user(4, kalman=back)), S)


def test_persist_checks_the_whole_state() -> None:
    """A persisted state with a bad filter, adaptation or buffer is refused."""
    bad_k = KalmanState(x=(80.0, 0.0), P=((1.0, 0.5), (-0.5, 1.0)), timestamp=T0)
    assert "P is not symmetric" in V.problems(persist_snapshot(user(3), user(4, kalman=bad_k)), S)
    assert "adaptation factor outside [1, 100]" in V.problems(
        persist_snapshot(user(3), user(4, adaptation=adapt(adaptation_factor=1e3))), S
    )
    assert V.problems({"new": None}, S) == ["no new user state to persist"]
    assert "version below 1" in V.user_state_problems(user(0))


def test_step_ok_agrees_with_problems_on_faults() -> None:
    """The fast per-reading check refuses what the full check refuses."""
    old = user(3)
    good = user(4)
    assert V.step_ok(old, good)
    for bad in (
        user(5),
        user(4, kalman=KalmanState((80.0, 0.0), ((1.0, 0.5), (-0.5, 1.0)), T0)),
        user(4, kalman=KalmanState((NAN, 0.0), ((1.0, 0.0), (0.0, 1.0)), T0)),
        user(4, kalman=KalmanState((80.0, 0.0), ((INF, 0.0), (0.0, 1.0)), T0)),
        user(4, adaptation=adapt(adaptation_factor=0.5)),
        user(4, last_event_at=T0 - timedelta(days=1)),
    ):
        assert not V.step_ok(old, bad)
        assert V.problems(persist_snapshot(old, bad), S)


def test_unknown_operation_and_unreadable_state_never_raise() -> None:
    """An unknown operation or a state of the wrong type is reported, not raised."""
    assert V.problems({}, "teleport") == ["no validator for operation 'teleport'"]
    assert V.problems(object(), K) == ["Kalman checkpoint is not a mapping of matrices"]
    assert V.problems(42, S)[0].startswith("state unreadable for state_persist")
    assert V.validate(kal(), "kalman_reset") and not V.validate(kal(R=[[0.0]]), K)


# -- one definition of a valid filter state -------------------------------------------------------

_EDGE = st.sampled_from([0.0, -0.0, 1e-300, -1e-300, 5.0, -5.0, 20.0, 500.0, NAN, INF, -INF])
_NUMBER = st.one_of(_EDGE, st.floats(-600.0, 600.0), st.floats(allow_nan=True, allow_infinity=True))


@settings(max_examples=400, deadline=None, derandomize=True)
@given(st.tuples(_NUMBER, _NUMBER), _NUMBER, _NUMBER, _NUMBER, _NUMBER, st.booleans())
def test_the_fast_check_never_passes_what_the_named_checks_refuse(
    x: tuple[float, float], p00: float, p01: float, p11: float, p10: float, symmetric: bool
) -> None:
    """Every fast path (per reading, bare state, checkpoint) is a shortcut of one rule set:
    what it passes, the fault-naming path passes too, and it passes the usual valid states."""
    P = ((p00, p01), (p01 if symmetric else p10, p11))
    if V._state_ok(x, P):
        assert V._filter_problems(list(x), {"P": [list(row) for row in P]}) == []
    k = KalmanState(x, P, T0)
    if V.step_ok(user(3), user(4, kalman=k)):
        assert V.problems(persist_snapshot(user(3), user(4, kalman=k)), S) == []
    assert V._state_ok((80.0, 0.01), ((2.0, 0.01), (0.01, 0.01)))


def test_the_fast_check_refuses_each_fault_the_named_checks_name() -> None:
    """Each fault kind fails the fast check and is named by the naming path, for a bare state
    and a checkpoint alike (one rule set, not three)."""
    faults = {
        (5.0, 0.0): "weight level outside the physiological range",
        (80.0, 9.0): "trend outside the plausible range",
        (NAN, 0.0): "x contains NaN or inf",
    }
    good_p = ((1.0, 0.0), (0.0, 0.01))
    for x, message in faults.items():
        assert not V._state_ok(x, good_p)
        assert message in V.kalman_state_problems(KalmanState(x, good_p, T0))
        assert message in V.problems(kal(x=list(x)), K)
    for P, message in (
        (((1.0, 0.5), (-0.5, 1.0)), "P is not symmetric"),
        (((1.0, 2.0), (2.0, 1.0)), "P is not positive definite"),
        (((INF, 0.0), (0.0, 1.0)), "P contains NaN or inf"),
        (((1.0, INF), (INF, 1.0)), "P contains NaN or inf"),
    ):
        assert not V._state_ok((80.0, 0.0), P)
        assert message in V.kalman_state_problems(KalmanState((80.0, 0.0), P, T0))
        assert message in V.problems(kal(P=[list(row) for row in P]), K)
