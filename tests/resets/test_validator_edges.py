"""Validator and recovery edges the main suites do not reach."""

from __future__ import annotations

from datetime import timedelta

from weightstream.config import Config
from weightstream.model import KalmanState, UserState
from weightstream.resets.manager import ResetManager
from weightstream.resets.recovery import ResetRecoveryService
from weightstream.resets.validator import (
    ResetOperation,
    StateValidator,
    kalman_snapshot,
)
from weightstream.store.memory import MemoryStore
from weightstream.testing import T0, measurement


def test_snapshot_of_a_three_state_filter_has_matching_shapes() -> None:
    """kalman_snapshot builds F (n x n) and H (1 x n) for any n; a 3-state filter validates."""
    k = KalmanState(
        x=(80.0, 0.0, 0.0),
        P=((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)),
        timestamp=T0,
    )
    q = ((0.1, 0.0, 0.0), (0.0, 0.1, 0.0), (0.0, 0.0, 0.1))
    snap = kalman_snapshot(k, q, 0.5)
    assert len(snap["F"]) == 3 and len(snap["H"][0]) == 3
    assert StateValidator().problems(snap, ResetOperation.KALMAN_RESET) == []


def test_a_bare_user_state_is_validated_as_a_first_write() -> None:
    """A UserState alone (no previous) must be version 1 to be persisted."""
    v = StateValidator()
    assert v.validate(UserState(user_id="u1", version=1), ResetOperation.STATE_PERSIST)
    problems = v.problems(UserState(user_id="u1", version=3), ResetOperation.STATE_PERSIST)
    assert problems == ["state version does not go up by exactly one"]


def test_interpolation_needs_neighbours_at_different_times() -> None:
    """Two accepted neighbours at the same instant give no interpolation; conservative wins."""
    store = MemoryStore()
    from weightstream.processor import Processor

    p = Processor(store)
    p.process_one(measurement(80.0, 0))
    cfg = Config()
    service = ResetRecoveryService(store, ResetManager(cfg))
    service.store = _SameInstant(store)  # type: ignore[assignment]
    recovered, attempts = service.recover("u1", measurement(81.0, 0.5), None)
    assert [a.strategy for a in attempts] == ["history", "interpolation", "conservative"]
    assert attempts[1].detail == "neighbours at the same time"
    assert recovered.outcome.value == "conservative"


class _SameInstant:
    """A store view whose nearest accepted readings sit at one instant."""

    def __init__(self, inner: MemoryStore) -> None:
        self.inner = inner

    def accepted_between(self, *args: object) -> list[object]:
        return []

    def nearest_accepted(self, user_id: str, when: object) -> tuple[object, object]:
        return (T0 + timedelta(days=1), 80.0), (T0 + timedelta(days=1), 82.0)
