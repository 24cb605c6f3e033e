"""A user's state as the loop's arrays: every slot holds what its name says, and back.

``to_arrays`` lays a state out slot by slot and ``from_arrays`` reads it back; the slots are
named in :mod:`weightstream.engine.kernel`. Also the group's user runs. Randomised with fixed
seeds.
"""

from __future__ import annotations

import random
from datetime import timedelta
from itertools import groupby

import pytest

from weightstream.engine import kernel as K
from weightstream.engine.group import _runs
from weightstream.engine.state import from_arrays, to_arrays
from weightstream.model import (
    AdaptationState,
    BufferedReading,
    KalmanState,
    ResetType,
    UserState,
    from_micros,
    to_micros,
)

SEEDS = range(12)
_BASE = {"base": 0}  # the configuration arrays are handed through untouched
_BY_TYPE = {str(t): str(t) for t in ResetType}


def _state(rng: random.Random) -> UserState:
    t0 = from_micros(rng.randrange(10**15, 2 * 10**15))

    def at(k: int) -> object:
        return t0 + timedelta(microseconds=k * rng.randrange(1, 10**10))

    def entry(k: int) -> BufferedReading:
        return BufferedReading(
            at(k), rng.uniform(40, 200), rng.choice(["scale", "clinic"]), "kg", 80.0, f"r{k}"
        )

    adapting = rng.random() < 0.5
    reset_type = rng.choice(list(ResetType))
    p01 = rng.uniform(-1, 1)
    return UserState(
        user_id="u",
        kalman=KalmanState(
            x=(rng.uniform(40, 200), rng.uniform(-1, 1)),
            P=((rng.uniform(0, 5), p01), (p01 + rng.choice([0.0, 1e-9]), rng.uniform(0, 1))),
            timestamp=at(3),
        ),
        adaptation=AdaptationState(
            is_adapting=adapting,
            adaptation_start=at(1) if adapting and rng.random() < 0.8 else None,
            adaptation_factor=rng.uniform(1, 10) if adapting else 1.0,
            measurements_since_reset=rng.randrange(0, 9),
            reset_type=reset_type if adapting else None,
        ),
        buffer=tuple(entry(k) for k in range(rng.randrange(0, 4))),
        rejected=tuple(entry(10 + k) for k in range(rng.randrange(0, K.REJECTED_KEPT + 1))),
        last_accepted_at=at(3),
        last_event_at=at(4) if rng.random() < 0.9 else None,
        last_reset_at=at(2) if rng.random() < 0.7 else None,
        last_reset_type=reset_type,
        accepted_count=rng.randrange(1, 500),
        version=rng.randrange(1, 900),
    )


def _none_or_micros(when: object) -> int:
    return K.NONE if when is None else to_micros(when)  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", SEEDS)
def test_every_slot_holds_what_its_name_says(seed: int) -> None:
    """Each float and integer slot, and the rejected ring, hold the state's own value."""
    state = _state(random.Random(seed))
    arrays = to_arrays(state, _BY_TYPE, _BASE)
    assert arrays is not None
    sf, si, rej_w, rej_t, c = arrays
    k, a, last = state.kalman, state.adaptation, (state.buffer or (None,))[-1]
    assert k is not None and state.last_accepted_at is not None
    assert sf.tolist() == [
        *k.x,
        k.P[0][0],
        k.P[0][1],
        k.P[1][0],
        k.P[1][1],
        a.adaptation_factor,
        0.0 if last is None else last.weight_kg,
    ]
    named = {
        K.I_K_TS: to_micros(k.timestamp),
        K.I_ADAPTING: int(a.is_adapting),
        K.I_ADAPT_START: _none_or_micros(a.adaptation_start),
        K.I_ADAPT_N: a.measurements_since_reset,
        K.I_HAS_LAST: int(last is not None),
        K.I_LAST_TS: K.NONE if last is None else to_micros(last.timestamp),
        K.I_LAST_ACCEPTED: to_micros(state.last_accepted_at),
        K.I_LAST_RESET: _none_or_micros(state.last_reset_at),
        K.I_LAST_EVENT: _none_or_micros(state.last_event_at),
        K.I_ACCEPTED: state.accepted_count,
        K.I_VERSION: state.version,
        K.I_REJ_COUNT: len(state.rejected),
        K.I_REJ_START: 0,
    }
    assert len(named) == K.I_SLOTS == len(si)
    assert {slot: int(si[slot]) for slot in named} == named
    n = len(state.rejected)
    assert rej_w.tolist() == [b.weight_kg for b in state.rejected] + [0.0] * (K.REJECTED_KEPT - n)
    assert rej_t.tolist() == [to_micros(b.timestamp) for b in state.rejected] + [0] * (
        K.REJECTED_KEPT - n
    )
    assert c == (_BY_TYPE[str(a.reset_type)] if a.is_adapting else _BASE)


@pytest.mark.parametrize("seed", SEEDS)
def test_arrays_back_to_the_same_state(seed: int) -> None:
    """Arrays the loop left untouched give the state back, equal and with Python numbers;
    with one more accepted reading, the filter's values come back as floats and ints."""
    state = _state(random.Random(seed))
    arrays = to_arrays(state, _BY_TYPE, _BASE)
    assert arrays is not None
    sf, si = arrays[0], arrays[1]
    if state.last_event_at is not None:
        assert from_arrays(state, sf, si, state.buffer, state.rejected) == state
    si[K.I_ACCEPTED] += 1
    si[K.I_LAST_EVENT] = si[K.I_LAST_ACCEPTED]
    back = from_arrays(state, sf, si, state.buffer, ())
    assert back.kalman == state.kalman
    assert back.accepted_count == state.accepted_count + 1
    assert type(back.accepted_count) is int and type(back.version) is int
    assert back.version == state.version
    assert back.last_event_at == state.last_accepted_at
    assert all(type(v) is float for v in (*back.kalman.x, *back.kalman.P[0], *back.kalman.P[1]))  # type: ignore[union-attr]
    assert type(back.adaptation.adaptation_factor) is float
    assert type(back.adaptation.measurements_since_reset) is int


@pytest.mark.parametrize("seed", SEEDS)
def test_runs_are_the_groups_users(seed: int) -> None:
    """Each user's run of a group, in order, as (start, end)."""
    rng = random.Random(seed)
    users = sorted(rng.choice(["a", "b", "ü", "", "a b"]) for _ in range(rng.randrange(1, 60)))
    expected, at = [], 0
    for _, run in groupby(users):
        n = len(list(run))
        expected.append((at, at + n))
        at += n
    assert list(_runs(users)) == expected
