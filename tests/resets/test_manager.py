"""ResetManager: reset decisions, reset effects, and adaptation that always ends."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from weightstream import kalman
from weightstream.config import Config
from weightstream.model import (
    AdaptationState,
    BufferedReading,
    KalmanState,
    ResetType,
    UserState,
)
from weightstream.resets.manager import NOT_ADAPTING, ResetManager
from weightstream.testing import T0, measurement

CFG = Config()
MGR = ResetManager(CFG)
MANUAL = "patient-upload"
DEVICE = "patient-device"
ALL_TYPES = (ResetType.INITIAL, ResetType.HARD, ResetType.SOFT)


def state_at(
    weight: float = 80.0,
    *,
    last_accepted_day: float = 0.0,
    last_reset_day: float | None = None,
) -> UserState:
    """A settled user whose last accepted reading (and filter time) is ``last_accepted_day``."""
    when = T0 + timedelta(days=last_accepted_day)
    return UserState(
        user_id="u1",
        kalman=KalmanState(x=(weight, 0.0), P=((0.3, 0.001), (0.001, 0.0004)), timestamp=when),
        last_accepted_at=when,
        last_event_at=when,
        last_reset_at=None if last_reset_day is None else T0 + timedelta(days=last_reset_day),
        last_reset_type=None if last_reset_day is None else ResetType.INITIAL,
        accepted_count=5,
        version=5,
    )


# -- decide -----------------------------------------------------------------------------------


def test_decide_initial_without_state():
    """No state, or a state without a filter, gives an INITIAL reset."""
    m = measurement(80.0)
    assert MGR.decide(None, m, None).reset_type is ResetType.INITIAL  # type: ignore[union-attr]
    empty = UserState(user_id="u1")
    assert MGR.decide(empty, m, None).reset_type is ResetType.INITIAL  # type: ignore[union-attr]


def test_decide_hard_at_the_gap_threshold():
    """A gap of exactly hard_gap_days is a HARD reset; just under it is none."""
    gap = CFG.resets.hard_gap_days
    s = state_at()
    at = MGR.decide(s, measurement(80.5, gap), 80.5)
    assert at is not None and at.reset_type is ResetType.HARD
    assert "gap" in at.trigger
    assert MGR.decide(s, measurement(80.5, gap - 1e-3), 80.5) is None
    later = MGR.decide(s, measurement(80.5, 400.0), 80.5)
    assert later is not None and later.reset_type is ResetType.HARD


def test_decide_hard_wins_over_soft():
    """A manual reading far off after a long gap is a HARD reset, not a soft one."""
    d = MGR.decide(state_at(), measurement(90.0, 31.0, source=MANUAL), 80.0)
    assert d is not None and d.reset_type is ResetType.HARD


def test_decide_soft_for_manual_source_at_threshold():
    """A manual source at least soft_threshold_kg from the prediction is a SOFT reset."""
    thr = CFG.resets.soft_threshold_kg
    s = state_at()
    for w in (80.0 + thr, 80.0 - thr, 80.0 + thr + 5.0):
        d = MGR.decide(s, measurement(w, 1.0, source=MANUAL), 80.0)
        assert d is not None and d.reset_type is ResetType.SOFT, w
        assert MANUAL in d.trigger
    assert MGR.decide(s, measurement(80.0 + thr - 0.01, 1.0, source=MANUAL), 80.0) is None
    assert MGR.decide(s, measurement(80.0 - thr + 0.01, 1.0, source=MANUAL), 80.0) is None


@pytest.mark.parametrize("source", sorted(CFG.sources.manual))
def test_decide_soft_for_every_manual_source(source: str):
    """Every configured manual source can trigger a soft reset."""
    d = MGR.decide(state_at(), measurement(85.0, 1.0, source=source), 80.0)
    assert d is not None and d.reset_type is ResetType.SOFT


@pytest.mark.parametrize("source", [DEVICE, "https://api.iglucose.com", "unknown"])
def test_decide_no_soft_for_device_sources(source: str):
    """A non-manual source never triggers a soft reset, however far off it is."""
    assert MGR.decide(state_at(), measurement(90.0, 1.0, source=source), 80.0) is None


def test_decide_no_soft_without_prediction():
    """Without a prediction there is nothing to compare against: no soft reset."""
    assert MGR.decide(state_at(), measurement(90.0, 1.0, source=MANUAL), None) is None


def test_decide_soft_cooldown_honoured():
    """Within soft_cooldown_days of the last reset no soft reset fires; from then on it does."""
    cool = CFG.resets.soft_cooldown_days
    s = state_at(last_accepted_day=0.0, last_reset_day=0.0)
    assert MGR.decide(s, measurement(85.0, cool - 0.01, source=MANUAL), 80.0) is None
    d = MGR.decide(s, measurement(85.0, cool, source=MANUAL), 80.0)
    assert d is not None and d.reset_type is ResetType.SOFT


def test_decide_none_for_ordinary_reading():
    """An ordinary reading close to the prediction triggers no reset."""
    assert MGR.decide(state_at(), measurement(80.4, 1.0), 80.0) is None
    assert MGR.decide(state_at(), measurement(80.4, 1.0, source=MANUAL), 80.0) is None


def test_reset_decision_repr():
    """A decision's repr names its type and trigger (for logs)."""
    d = MGR.decide(None, measurement(80.0), None)
    assert repr(d) == "ResetDecision('initial', 'first reading')"


# -- apply_reset ------------------------------------------------------------------------------


@pytest.mark.parametrize("rtype", [ResetType.INITIAL, ResetType.HARD])
def test_initial_and_hard_restart_at_the_reading(rtype: ResetType):
    """INITIAL/HARD start the filter at the reading, zero trend, inflated diagonal covariance."""
    m = measurement(83.2, 40.0)
    old = state_at().kalman
    k = MGR.apply_reset(old, rtype, m)
    mult = CFG.resets.boost(rtype).initial_var_multiplier
    assert k.x == (83.2, 0.0)
    assert (
        (CFG.filter.initial_weight_var * mult, 0.0),
        (0.0, CFG.filter.initial_trend_var * mult),
    ) == k.P
    assert k.timestamp == m.timestamp
    assert len(k.x) == 2 and all(len(row) == 2 for row in k.P)
    assert k.P[0][0] > CFG.filter.initial_weight_var


def test_reset_covariance_per_type():
    """Each reset type inflates the prior by its own multiplier (soft less than hard)."""
    for rtype in ALL_TYPES:
        P = MGR.reset_covariance(rtype)
        mult = CFG.resets.boost(rtype).initial_var_multiplier
        assert P[0][0] == CFG.filter.initial_weight_var * mult
        assert P[1][1] == CFG.filter.initial_trend_var * mult
        assert P[0][1] == P[1][0] == 0.0
    assert MGR.reset_covariance(ResetType.SOFT)[0][0] < MGR.reset_covariance(ResetType.HARD)[0][0]


def test_soft_reset_keeps_prediction_and_moves_toward_reading():
    """SOFT predicts forward, inflates P, and lands strictly between prediction and reading."""
    old = KalmanState(x=(80.0, -0.1), P=((0.3, 0.001), (0.001, 0.0004)), timestamp=T0)
    m = measurement(86.0, 2.0, source=MANUAL)
    k = MGR.apply_reset(old, ResetType.SOFT, m)
    predicted = 80.0 - 0.1 * 2.0
    assert predicted < k.x[0] < 86.0
    assert k.timestamp == m.timestamp
    assert len(k.x) == 2
    # The trend is kept (and nudged toward the reading), not zeroed as in a hard reset.
    assert k.x[1] != 0.0 and k.x[1] > -0.1
    # Compared with an ordinary update, the inflated covariance moves it further toward 86.
    xq, Pq = kalman.predict((80.0, -0.1), old.P, 2.0, CFG.filter.q_weight, CFG.filter.q_trend)
    plain = kalman.update(xq, Pq, 86.0, MGR.measurement_var(MANUAL))
    assert k.x[0] > plain.x[0]
    assert k.P[0][0] > plain.P[0][0]
    # Covariance stays valid.
    assert k.P[0][1] == k.P[1][0]
    assert k.P[0][0] > 0 and k.P[1][1] > 0
    assert k.P[0][0] * k.P[1][1] - k.P[0][1] ** 2 > 0


def test_soft_reset_without_state_starts_at_reading():
    """A SOFT reset with no prior filter falls back to starting at the reading."""
    k = MGR.apply_reset(None, ResetType.SOFT, measurement(70.0))
    assert k.x == (70.0, 0.0)
    assert MGR.reset_covariance(ResetType.SOFT) == k.P


def test_buffer_after_reset_per_type():
    """HARD/INITIAL start the buffer anew; SOFT appends to it (bounded, time-ordered)."""
    old = tuple(BufferedReading(T0 + timedelta(days=i), 80.0 + i, DEVICE) for i in range(3))
    m = measurement(84.0, 5.0, source=MANUAL)
    entry = BufferedReading.of(m)
    assert MGR.buffer_after_reset(old, ResetType.HARD, m) == (entry,)
    assert MGR.buffer_after_reset(old, ResetType.INITIAL, m) == (entry,)
    assert MGR.buffer_after_reset(old, ResetType.SOFT, m) == (*old, entry)
    full = tuple(BufferedReading(T0 + timedelta(hours=i), 80.0, DEVICE) for i in range(50))
    pushed = MGR.push(full, BufferedReading(T0 - timedelta(days=1), 79.0, DEVICE))
    assert len(pushed) == CFG.resets.buffer_size
    assert [b.timestamp for b in pushed] == sorted(b.timestamp for b in pushed)


def test_reset_noise_is_boosted_positive():
    """The one-day reset noise is the base Q times the type's multiplier, positive definite."""
    for rtype in ALL_TYPES:
        q = MGR.reset_noise(rtype)
        base = kalman.process_noise(1.0, CFG.filter.q_weight, CFG.filter.q_trend)
        mult = CFG.resets.boost(rtype).q_multiplier
        assert math.isclose(q[0][0], base[0][0] * mult, rel_tol=1e-12)
        assert q[0][0] > 0 and q[1][1] > 0 and q[0][0] * q[1][1] - q[0][1] * q[1][0] > 0


# -- adaptation -------------------------------------------------------------------------------


def run_adaptation(rtype: ResetType, offsets_days: list[float]) -> list[AdaptationState]:
    """Adaptation states after a reset at T0 followed by accepted readings at the offsets."""
    a = MGR.create_adaptation_state(rtype, T0)
    out = []
    for d in offsets_days:
        a = MGR.advance(a, T0 + timedelta(days=d))
        out.append(a)
    return out


@pytest.mark.parametrize("rtype", ALL_TYPES)
def test_adaptation_starts_with_full_boost(rtype: ResetType):
    """A fresh adaptation carries the full q_multiplier and counts from zero."""
    a = MGR.create_adaptation_state(rtype, T0)
    boost = CFG.resets.boost(rtype)
    assert a.is_adapting and a.adaptation_factor == boost.q_multiplier
    assert a.measurements_since_reset == 0 and a.reset_type is rtype
    assert a.adaptation_start == T0
    qw, qt = MGR.process_noise(a)
    assert qw == CFG.filter.q_weight * boost.q_multiplier
    assert qt == CFG.filter.q_trend * boost.q_multiplier


@pytest.mark.parametrize("rtype", ALL_TYPES)
def test_adaptation_ends_by_reading_count_with_dense_readings(rtype: ResetType):
    """Hourly readings end adaptation at exactly adaptation_readings readings, factor exactly 1."""
    boost = CFG.resets.boost(rtype)
    n = boost.adaptation_readings
    assert n / 24 < boost.adaptation_days  # the count, not the days, must end it here
    states = run_adaptation(rtype, [i / 24 for i in range(1, n + 3)])
    for a in states[: n - 1]:
        assert a.is_adapting and a.adaptation_factor > 1.0
    for a in states[n - 1 :]:
        assert a == NOT_ADAPTING
        assert a.is_adapting is False and a.adaptation_factor == 1.0
        assert MGR.process_noise(a) == (CFG.filter.q_weight, CFG.filter.q_trend)


@pytest.mark.parametrize("rtype", ALL_TYPES)
def test_adaptation_ends_by_days_with_sparse_readings(rtype: ResetType):
    """Readings spaced far apart end adaptation at adaptation_days, long before the count."""
    boost = CFG.resets.boost(rtype)
    step = boost.adaptation_days / 2.5
    states = run_adaptation(rtype, [step, 2 * step, 3 * step, 4 * step])
    assert states[0].is_adapting and states[1].is_adapting
    assert states[2] == NOT_ADAPTING and states[2].adaptation_factor == 1.0
    assert states[3] == NOT_ADAPTING
    assert boost.adaptation_readings > 3


@pytest.mark.parametrize("rtype", ALL_TYPES)
def test_adaptation_ends_at_exactly_adaptation_days(rtype: ResetType):
    """A reading exactly adaptation_days after the reset ends adaptation; just before does not."""
    boost = CFG.resets.boost(rtype)
    before = run_adaptation(rtype, [boost.adaptation_days - 1e-3])[0]
    assert before.is_adapting and before.adaptation_factor > 1.0
    assert run_adaptation(rtype, [boost.adaptation_days])[0] == NOT_ADAPTING


@pytest.mark.parametrize("rtype", ALL_TYPES)
def test_adaptation_factor_decreases_monotonically(rtype: ResetType):
    """While adapting, each reading lowers the factor; it stays within [1, q_multiplier]."""
    boost = CFG.resets.boost(rtype)
    states = run_adaptation(rtype, [0.1 * i for i in range(1, boost.adaptation_readings + 1)])
    factors = [boost.q_multiplier] + [a.adaptation_factor for a in states if a.is_adapting]
    assert len(factors) == boost.adaptation_readings
    assert all(b < a for a, b in zip(factors, factors[1:], strict=False))
    assert all(1.0 < f <= boost.q_multiplier for f in factors)
    assert [a.measurements_since_reset for a in states if a.is_adapting] == list(
        range(1, boost.adaptation_readings)
    )


def test_advance_when_not_adapting_is_identity():
    """Advancing a finished adaptation leaves it finished with factor 1."""
    assert MGR.advance(NOT_ADAPTING, T0) == NOT_ADAPTING
    stale = AdaptationState(is_adapting=False, adaptation_factor=4.0, measurements_since_reset=3)
    assert MGR.advance(stale, T0) == NOT_ADAPTING
    orphan = AdaptationState(is_adapting=True, adaptation_factor=4.0, reset_type=None)
    assert MGR.advance(orphan, T0) == NOT_ADAPTING


def test_process_noise_ignores_factor_when_not_adapting():
    """A leftover factor on a non-adapting state never inflates the noise."""
    stale = AdaptationState(is_adapting=False, adaptation_factor=7.0)
    assert MGR.process_noise(stale) == (CFG.filter.q_weight, CFG.filter.q_trend)


schedule = st.lists(st.floats(-5.0, 60.0, allow_nan=False), min_size=1, max_size=40)


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(ALL_TYPES), schedule, st.booleans())
def test_adaptation_always_ends(rtype: ResetType, offsets: list[float], ordered: bool):
    """Over any reading schedule adaptation ends by adaptation_readings readings or days."""
    if ordered:
        offsets = sorted(offsets)
    boost = CFG.resets.boost(rtype)
    a = MGR.create_adaptation_state(rtype, T0)
    previous = a.adaptation_factor
    ended = False
    for i, d in enumerate(offsets, start=1):
        when = T0 + timedelta(days=d)
        d = (when - T0).total_seconds() / 86_400  # what the manager sees, to the microsecond
        a = MGR.advance(a, when)
        if ended:
            assert a == NOT_ADAPTING, "adaptation restarted by itself"
        if i >= boost.adaptation_readings or d >= boost.adaptation_days:
            assert a == NOT_ADAPTING
        if a.is_adapting:
            # >= 1, not > 1: just before adaptation_days the boost can round to exactly 1.
            assert 1.0 <= a.adaptation_factor <= boost.q_multiplier
            assert a.measurements_since_reset == i
            if ordered:
                assert a.adaptation_factor <= previous
            previous = a.adaptation_factor
        else:
            ended = True
            assert a.adaptation_factor == 1.0
            assert MGR.process_noise(a) == (CFG.filter.q_weight, CFG.filter.q_trend)
    if len(offsets) >= boost.adaptation_readings:
        assert ended


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from(ALL_TYPES),
    st.integers(1, 30),
    st.floats(0.5, 30.0),
    st.floats(1.1, 50.0),
    st.floats(0.2, 10.0),
    st.lists(st.floats(0.0, 100.0), min_size=1, max_size=60),
)
def test_adaptation_always_ends_for_any_boost(
    rtype: ResetType, readings: int, days: float, qmult: float, decay: float, offsets: list[float]
):
    """For any configured boost, adaptation ends within adaptation_readings readings or days."""
    boost = {
        "initial_var_multiplier": 2.0,
        "q_multiplier": qmult,
        "adaptation_readings": readings,
        "adaptation_days": days,
        "decay_readings": decay,
    }
    cfg = Config(resets={str(rtype): boost})  # type: ignore[arg-type]
    mgr = ResetManager(cfg)
    a = mgr.create_adaptation_state(rtype, T0)
    offsets = sorted(offsets)
    for i, d in enumerate(offsets, start=1):
        when = T0 + timedelta(days=d)
        d = (when - T0).total_seconds() / 86_400  # what the manager sees, to the microsecond
        a = mgr.advance(a, when)
        if i >= readings or d >= days:
            assert a == NOT_ADAPTING
        if a.is_adapting:
            assert 1.0 <= a.adaptation_factor <= qmult
    if len(offsets) >= readings or d >= days:
        assert a.is_adapting is False and a.adaptation_factor == 1.0


def test_late_reading_does_not_extend_adaptation():
    """Readings timed before the reset still count, so adaptation still ends by count."""
    boost = CFG.resets.hard
    states = run_adaptation(ResetType.HARD, [-1.0] * boost.adaptation_readings)
    assert states[-1] == NOT_ADAPTING
    assert states[0].is_adapting and states[0].measurements_since_reset == 1
