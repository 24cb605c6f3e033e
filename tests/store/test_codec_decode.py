"""Strict decoding of a stored state row (issue 10): any failure is StateCorruptionError.

SQLite keeps whatever type it is given, so a row read back may hold text where a number must
be, a blob, a time no datetime can hold. On the old main these escaped as raw ValueError,
TypeError, OverflowError or JSONDecodeError (a traceback, exit 1, for every user).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from weightstream.errors import StateCorruptionError
from weightstream.model import (
    AdaptationState,
    BufferedReading,
    KalmanState,
    ResetType,
    UserState,
)
from weightstream.store import codec

T = datetime(2025, 2, 1, 7, 30, tzinfo=UTC)
STATE = UserState(
    user_id="u1",
    kalman=KalmanState((80.25, 0.01), ((0.5, 0.0), (0.0, 0.01)), T),
    adaptation=AdaptationState(True, T, 3.0, 2, ResetType.HARD),
    buffer=(BufferedReading(T, 80.25, "patient-device"),),
    last_accepted_at=T,
    last_event_at=T,
    last_reset_at=T,
    last_reset_type=ResetType.HARD,
    accepted_count=4,
    version=7,
)
COL = {name: i for i, name in enumerate(codec.STATE_COLUMNS)}


def row_with(**changes: Any) -> tuple[Any, ...]:
    row = list(codec.state_to_row(STATE))
    for name, value in changes.items():
        row[COL[name]] = value
    return tuple(row)


def test_a_good_row_round_trips_exactly() -> None:
    """What state_to_row wrote, row_to_state reads back equal."""
    assert codec.row_to_state(codec.state_to_row(STATE)) == STATE


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("buffer", "[[1, 80.25, 'x'"),
        ("buffer", '{"a": 1}'),
        ("buffer", "[[1, 80.25]]"),
        ("buffer", b"\x00"),
        ("rejected", None),
        ("last_reset_type", "sideways"),
        ("adapt_type", "HARD"),
        ("x0", "eighty point two five"),
        ("p11", b"\x01\x02"),
        ("kalman_ts", 2**63 - 1),
        ("last_event", -(2**62)),
        ("adapt_start", "2025-02-01"),
        ("accepted_count", -3),
        ("adapt_n", 1.5),
        ("version", 0),
        ("version", -1),
        ("version", "7"),
        ("version", None),
        ("has_kalman", 2),
        ("adapting", "yes"),
        ("user_id", ""),
    ],
)
def test_a_row_that_does_not_decode_is_state_corruption(field: str, value: Any) -> None:
    """Each bad column is StateCorruptionError naming the field, never the value, and
    carrying the raw version column for the compare-and-swap repair."""
    row = row_with(**{field: value})
    with pytest.raises(StateCorruptionError) as caught:
        codec.row_to_state(row)
    err = caught.value
    assert field in err.message
    assert "80.25" not in str(err) and "eighty" not in str(err)
    assert err.stored_version == row[COL["version"]]


def test_null_in_a_float_column_decodes_as_nan_for_the_validator() -> None:
    """NULL is how SQLite stores a NaN: it decodes (as NaN) and the validator refuses it."""
    from weightstream.repair import check_state
    from weightstream.resets.validator import StateValidator

    state = codec.row_to_state(row_with(x0=None))
    with pytest.raises(StateCorruptionError) as caught:
        check_state(state, StateValidator())
    assert caught.value.stored_version == 7


def test_a_row_of_the_wrong_width_is_state_corruption() -> None:
    """A row with a missing column (a schema from elsewhere) is corruption, not IndexError."""
    with pytest.raises(StateCorruptionError):
        codec.row_to_state(codec.state_to_row(STATE)[:-1])


_finite = st.floats(allow_nan=False, allow_infinity=False, width=64)


@settings(max_examples=200, deadline=None)
@given(
    entries=st.lists(
        st.tuples(
            st.integers(0, 4_000_000_000_000_000),
            _finite,
            st.one_of(st.text(min_size=1, max_size=12), st.just("scale\ud800")),
            st.sampled_from(["kg", "lb", "[lb_ap]", ""]),
            st.one_of(st.none(), _finite),
            st.text(max_size=40),
            _finite,
        ),
        max_size=25,
    )
)
def test_buffers_round_trip_exactly(entries: list[tuple[Any, ...]]) -> None:
    """Any buffer of finite numbers and any texts reads back equal (orjson writes it)."""
    buffer = tuple(
        BufferedReading(
            codec.from_micros(t), w, source, unit=unit, value=value, reading_id=rid, offset_kg=o
        )
        for t, w, source, unit, value, rid, o in entries
    )
    state = replace(STATE, buffer=buffer, rejected=buffer[:3])
    assert codec.row_to_state(codec.state_to_row(state)) == state
