"""The recovery service: a valid state for a user whose reset failed, from stored history.

Strategies, tried in order; the first whose preconditions hold wins:

Weights are on the reference scale: the store's ``accepted_between`` and ``nearest_accepted``
give each reading less its offset (``weight_kg - offset_kg``), as the filter took it.

1. **history**: at least ``min_readings`` (3) accepted readings in the ``window_days`` (7) before
   the reading. Level: their mean carried to the reading's time along the trend; trend: the
   Theil-Sen slope (median of pairwise slopes: robust to an outlier that slipped through,
   and not zero by fiat as in the plan's sketch); variance: their spread around that line.
2. **interpolation**: accepted readings on both sides of the reading's time (possible when the
   reading is late): linear interpolation between the nearest two.
3. **conservative**: the reading itself (less its offset) with a high uncertainty (25 kg^2,
   i.e. 5 kg sd), so the next readings quickly take over.

Every attempt, successful or not, is returned as a :class:`RecoveryAttempt` that the caller
commits in the same unit of work as the state it leads to (the plan kept them in an
in-memory dict that grew forever). :meth:`recover_from_failed_reset` is the stand-alone form
that persists its attempts itself. Each recovered state passes
:class:`~weightstream.resets.validator.StateValidator` or the strategy counts as failed.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import datetime, timedelta

from weightstream.clock import SECONDS_PER_DAY, SYSTEM_CLOCK, Clock
from weightstream.frozen import fast_init
from weightstream.model import (
    AdaptationState,
    KalmanState,
    Measurement,
    RecoveryAttempt,
    ResetOutcome,
    ResetType,
    UserState,
)
from weightstream.resets.manager import ResetManager
from weightstream.resets.validator import StateValidator
from weightstream.store.base import StateStore, UnitOfWork

__all__ = ["ResetRecoveryService", "RecoveredState", "CONSERVATIVE_WEIGHT_VAR"]

CONSERVATIVE_WEIGHT_VAR = 25.0
CONSERVATIVE_TREND_VAR = 0.01


@fast_init
@dataclass(frozen=True, slots=True)
class RecoveredState:
    """A filter state and adaptation to continue from, and which path produced it."""

    kalman: KalmanState
    adaptation: AdaptationState
    outcome: ResetOutcome


class ResetRecoveryService:
    """Builds a state from history when a reset could not be committed."""

    def __init__(
        self,
        store: StateStore,
        reset_manager: ResetManager,
        *,
        clock: Clock = SYSTEM_CLOCK,
        validator: StateValidator | None = None,
        window_days: float = 7.0,
        min_readings: int = 3,
    ) -> None:
        self.store = store
        self.manager = reset_manager
        self.clock = clock
        self.validator = validator or StateValidator()
        self.window_days = window_days
        self.min_readings = min_readings

    def recover_from_failed_reset(
        self, user_id: str, measurement: Measurement, failed_state: UserState | None
    ) -> RecoveredState:
        """Recover, and persist the attempts at once (stand-alone use)."""
        recovered, attempts = self.recover(user_id, measurement, failed_state)
        self.store.commit(UnitOfWork(recoveries=attempts))
        return recovered

    def recover(
        self, user_id: str, measurement: Measurement, failed_state: UserState | None
    ) -> tuple[RecoveredState, list[RecoveryAttempt]]:
        """Try the strategies in order; the conservative one always succeeds."""
        attempts: list[RecoveryAttempt] = []
        for name, strategy in (
            ("history", self._from_history),
            ("interpolation", self._interpolate),
        ):
            try:
                found, detail = strategy(user_id, measurement)
            except Exception as exc:  # noqa: BLE001 - a failed strategy is an attempt, not a crash
                found, detail = None, f"{type(exc).__name__}"
            if found is not None:
                problems = self.validator.kalman_state_problems(found.kalman)
                if problems:
                    found, detail = None, "state failed validation: " + "; ".join(problems)
            attempts.append(self._attempt(user_id, measurement, name, found is not None, detail))
            if found is not None:
                return found, attempts
        found = self.conservative(measurement)
        attempts.append(self._attempt(user_id, measurement, "conservative", True, "from reading"))
        return found, attempts

    # -- strategies ---------------------------------------------------------------------------

    def _from_history(self, user_id: str, m: Measurement) -> tuple[RecoveredState | None, str]:
        start = m.timestamp - timedelta(days=self.window_days)
        rows = self.store.accepted_between(user_id, start, m.timestamp)
        if len(rows) < self.min_readings:
            return None, f"{len(rows)} accepted readings in {self.window_days:g} days"
        times = [(t - m.timestamp).total_seconds() / SECONDS_PER_DAY for t, _ in rows]
        weights = [w for _, w in rows]
        slope = _theil_sen(times, weights)
        t_mean = statistics.fmean(times)
        level = statistics.fmean(weights) + slope * (0.0 - t_mean)
        residuals = [w - (level + slope * t) for t, w in zip(times, weights, strict=True)]
        spread = statistics.pvariance(residuals) if len(residuals) > 1 else 0.0
        f = self.manager.config.filter
        P = (
            (max(spread, f.initial_weight_var), 0.0),
            (0.0, max(f.initial_trend_var, spread / max(1.0, self.window_days) ** 2)),
        )
        k = KalmanState(x=(level, slope), P=P, timestamp=m.timestamp)
        adaptation = self._adaptation(ResetType.HARD, m.timestamp)
        return RecoveredState(k, adaptation, ResetOutcome.RECOVERED_HISTORY), (
            f"{len(rows)} readings"
        )

    def _interpolate(self, user_id: str, m: Measurement) -> tuple[RecoveredState | None, str]:
        before, after = self.store.nearest_accepted(user_id, m.timestamp)
        if before is None or after is None:
            return None, "no accepted readings on both sides"
        (t0, w0), (t1, w1) = before, after
        span = (t1 - t0).total_seconds() / SECONDS_PER_DAY
        if span <= 0:
            return None, "neighbours at the same time"
        ratio = (m.timestamp - t0).total_seconds() / SECONDS_PER_DAY / span
        level = w0 + (w1 - w0) * ratio
        slope = (w1 - w0) / span
        f = self.manager.config.filter
        P = ((f.initial_weight_var * 4.0, 0.0), (0.0, f.initial_trend_var * 4.0))
        k = KalmanState(x=(level, slope), P=P, timestamp=m.timestamp)
        adaptation = self._adaptation(ResetType.HARD, m.timestamp)
        return RecoveredState(k, adaptation, ResetOutcome.RECOVERED_INTERPOLATED), (
            f"between readings {span:.1f} days apart"
        )

    def conservative(self, m: Measurement) -> RecoveredState:
        """The reading itself, very uncertain: always valid for an in-range reading."""
        k = KalmanState(
            x=(m.filter_kg, 0.0),
            P=((CONSERVATIVE_WEIGHT_VAR, 0.0), (0.0, CONSERVATIVE_TREND_VAR)),
            timestamp=m.timestamp,
        )
        adaptation = self._adaptation(ResetType.INITIAL, m.timestamp)
        return RecoveredState(k, adaptation, ResetOutcome.CONSERVATIVE)

    def _adaptation(self, reset_type: ResetType, when: datetime) -> AdaptationState:
        """Built here from config, not by the reset manager whose failure brought us here."""
        boost = self.manager.config.resets.boost(reset_type)
        return AdaptationState(True, when, boost.q_multiplier, 0, reset_type)

    def _attempt(
        self, user_id: str, m: Measurement, strategy: str, ok: bool, detail: str
    ) -> RecoveryAttempt:
        return RecoveryAttempt(user_id, m.reading_id, strategy, ok, detail, self.clock.now())


def _theil_sen(times: list[float], weights: list[float]) -> float:
    slopes = [
        (weights[j] - weights[i]) / (times[j] - times[i])
        for i in range(len(times))
        for j in range(i + 1, len(times))
        if times[j] != times[i]
    ]
    return statistics.median(slopes) if slopes else 0.0
