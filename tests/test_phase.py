"""A user's lifecycle phase: decided by ``lifecycle.phase_of`` alone, and what each leads to."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest

from weightstream.config import Config
from weightstream.lifecycle import Phase, phase_of
from weightstream.model import (
    AdaptationState,
    BufferedReading,
    KalmanState,
    ResetType,
    UserState,
    Verdict,
)
from weightstream.processor import Processor
from weightstream.resets import triggers
from weightstream.resets.manager import ResetManager
from weightstream.testing import T0, MemoryStore, measurement

K = KalmanState((80.0, 0.0), ((0.3, 0.0), (0.0, 0.0004)), T0)
ENTRY = BufferedReading(T0, 80.0, "patient-device")


def _phase_of(p: Processor) -> Phase:
    state = p.load_state("u1")
    assert state is not None
    return phase_of(state)


def test_a_user_goes_new_adapting_tracking_needs_recovery_and_back() -> None:
    """First reading: NEW to ADAPTING; adaptation's end: TRACKING; an outlier: NEEDS_RECOVERY."""
    p = Processor(MemoryStore(), Config())
    assert phase_of(UserState("u1")) is Phase.NEW
    p.process_one(measurement(80.0, 0))
    assert _phase_of(p) is Phase.ADAPTING
    day = 1
    while _phase_of(p) is Phase.ADAPTING:
        assert p.process_one(measurement(80.0, day)).verdict is Verdict.ACCEPTED
        day += 1
    assert _phase_of(p) is Phase.TRACKING
    assert p.process_one(measurement(120.0, day)).verdict is Verdict.REJECTED
    assert _phase_of(p) is Phase.NEEDS_RECOVERY
    assert p.process_one(measurement(80.0, day + 1)).verdict is Verdict.ACCEPTED
    assert _phase_of(p) is Phase.TRACKING


def test_a_consistent_streak_restarts_a_filter_in_doubt() -> None:
    """Readings that agree with each other, all rejected, end NEEDS_RECOVERY with a hard reset."""
    p = Processor(MemoryStore(), Config())
    for day in range(20):
        p.process_one(measurement(80.0, day))
    results = [p.process_one(measurement(95.0, 20 + i * 0.5)) for i in range(6)]
    assert results[0].verdict is Verdict.REJECTED
    assert any(r.reset_type is ResetType.HARD for r in results)
    assert _phase_of(p) is Phase.ADAPTING


@pytest.mark.parametrize(
    ("has_filter", "rejected", "adapting", "accepted"),
    list(itertools.product([False, True], repeat=4)),
)
def test_phase_precedence(has_filter: bool, rejected: bool, adapting: bool, accepted: bool) -> None:
    """NEW (no filter), then NEEDS_RECOVERY (rejections), then ADAPTING (boost on), TRACKING."""
    state = UserState(
        "u1",
        kalman=K if has_filter else None,
        rejected=(ENTRY,) if rejected else (),
        adaptation=AdaptationState(is_adapting=True, reset_type=ResetType.HARD)
        if adapting
        else AdaptationState(),
        last_accepted_at=T0 if accepted else None,
        version=1,
    )
    expected = (
        Phase.NEW
        if not has_filter
        else Phase.NEEDS_RECOVERY
        if rejected
        else Phase.ADAPTING
        if adapting
        else Phase.TRACKING
    )
    assert phase_of(state) is expected
    # Whatever the phase, a filter without an accepted reading starts over (initial reset).
    decision = ResetManager(Config()).decide(state, measurement(80.0, 1), 80.0)
    if not has_filter or not accepted:
        assert decision is not None and decision.reset_type is ResetType.INITIAL
    else:
        assert decision is None


def test_only_a_user_in_doubt_is_checked_for_a_streak() -> None:
    """The streak trigger needs NEEDS_RECOVERY: the same readings without rejections do nothing."""
    cfg = Config()
    manager = ResetManager(cfg)
    base = UserState(
        "u1",
        kalman=K,
        buffer=(ENTRY,),
        last_accepted_at=T0,
        accepted_count=30,
        version=5,
    )
    doubt = replace(
        base,
        rejected=tuple(
            BufferedReading(measurement(95.0, 1 + i * 0.1).timestamp, 95.0, "patient-device")
            for i in range(cfg.rules.streak_established)
        ),
    )
    m = measurement(95.0, 2)
    assert phase_of(doubt) is Phase.NEEDS_RECOVERY and phase_of(base) is Phase.TRACKING
    decision = triggers.decide(manager, doubt, m, 80.0)
    assert decision is not None and decision.trigger == triggers.STREAK_TRIGGER
    assert triggers.decide(manager, base, m, 80.0) is None
