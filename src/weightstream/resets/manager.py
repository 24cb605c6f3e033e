"""Resets and the adaptation that follows them.

Triggers (thresholds in :class:`~weightstream.config.ResetConfig`):

* ``INITIAL``: the user has no filter state yet;
* ``HARD``: at least ``hard_gap_days`` since the last accepted reading (the reference system
  never saw its gaps because it did not sort; here input is in event-time order);
* ``SOFT``: a manual source (questionnaire, patient or care-team upload) differing by at least
  ``soft_threshold_kg`` from the prediction, at most once per ``soft_cooldown_days``; also a
  run of three mutually consistent rejected readings (the filter, not the readings, is wrong:
  without this, one bad first reading would make every later one an "outlier").

Effect: ``INITIAL``/``HARD`` restart the filter at the reading with inflated variance;
``SOFT`` keeps the prediction but inflates its covariance, then lets the reading update it.
Adaptation multiplies process noise by a factor that decays as ``exp(-n / decay_readings)``
with the readings since the reset and linearly with the days, and *ends* (factor exactly 1,
``is_adapting`` False) after ``adaptation_readings`` readings or ``adaptation_days`` days,
whichever comes first. The reference system kept boosted noise forever for most users.
"""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import datetime

from weightstream import kalman
from weightstream.clock import SECONDS_PER_DAY
from weightstream.config import Config, ResetBoost
from weightstream.lifecycle import Phase, phase_of
from weightstream.model import (
    AdaptationState,
    BufferedReading,
    KalmanState,
    Measurement,
    ResetType,
    UserState,
)

__all__ = ["ResetManager", "ResetDecision", "NOT_ADAPTING"]

NOT_ADAPTING = AdaptationState()
#: How many sources' measurement variances a manager remembers (input sources are unbounded).
_SOURCES_REMEMBERED = 256


class ResetDecision:
    """A reset to perform and why (``trigger`` goes to the audit record)."""

    __slots__ = ("reset_type", "trigger")

    def __init__(self, reset_type: ResetType, trigger: str) -> None:
        self.reset_type = reset_type
        self.trigger = trigger

    def __repr__(self) -> str:
        return f"ResetDecision({self.reset_type.value!r}, {self.trigger!r})"


class ResetManager:
    """Decides, applies and adapts resets. Pure: values in, values out."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._f = config.filter
        self._r = config.resets
        # Per reset type, what a reset of that type starts from (the configuration is frozen,
        # so these are computed once): boost, P0 and Q for one day. Shared tuples: immutable.
        self._boosts = {t: self._r.boost(t) for t in ResetType}
        self._p0 = {t: self._reset_covariance(t) for t in ResetType}
        self._q1 = {t: self._reset_noise(t) for t in ResetType}
        self._r_by_source: dict[str, float] = {}

    # -- deciding -------------------------------------------------------------------------

    def decide(
        self, state: UserState | None, m: Measurement, predicted_weight: float | None
    ) -> ResetDecision | None:
        """The reset ``m`` triggers for ``state``, if any.

        A NEW user's first reading starts the filter; so does the next reading of a filter
        with no accepted reading (only a corrupt stored row gives one).
        """
        if state is None or phase_of(state) is Phase.NEW or state.last_accepted_at is None:
            return ResetDecision(ResetType.INITIAL, "first reading")
        gap_days = (m.timestamp - state.last_accepted_at).total_seconds() / SECONDS_PER_DAY
        if gap_days >= self._r.hard_gap_days:
            return ResetDecision(ResetType.HARD, f"gap of {gap_days:.1f} days")
        if (
            predicted_weight is not None
            and self.config.sources.is_manual(m.source)
            and abs(m.filter_kg - predicted_weight) >= self._r.soft_threshold_kg
            and self._cooled_down(state, m.timestamp)
        ):
            return ResetDecision(ResetType.SOFT, f"manual entry from {m.source}")
        return None

    def _cooled_down(self, state: UserState, when: datetime) -> bool:
        if state.last_reset_at is None:
            return True
        return (
            when - state.last_reset_at
        ).total_seconds() / SECONDS_PER_DAY >= self._r.soft_cooldown_days

    # -- applying -------------------------------------------------------------------------

    def _boost(self, reset_type: ResetType) -> ResetBoost:
        boost = self._boosts.get(reset_type)
        return boost if boost is not None else self._r.boost(reset_type)

    def reset_covariance(self, reset_type: ResetType) -> kalman.Mat:
        """P right after a reset of ``reset_type`` (before the reading's update, for SOFT)."""
        p0 = self._p0.get(reset_type)
        return p0 if p0 is not None else self._reset_covariance(reset_type)

    def _reset_covariance(self, reset_type: ResetType) -> kalman.Mat:
        mult = self._r.boost(reset_type).initial_var_multiplier
        return (
            (self._f.initial_weight_var * mult, 0.0),
            (0.0, self._f.initial_trend_var * mult),
        )

    def apply_reset(
        self, kalman_state: KalmanState | None, reset_type: ResetType, measurement: Measurement
    ) -> KalmanState:
        """The filter state right after the reset, the reading folded in."""
        P0 = self._p0.get(reset_type)
        if P0 is None:
            P0 = self._reset_covariance(reset_type)
        z = measurement.filter_kg  # the reading less its offset, as every update takes it
        if reset_type is ResetType.SOFT and kalman_state is not None:
            dt = _days(kalman_state.timestamp, measurement.timestamp)
            boost = self._r.soft.q_multiplier
            x, P = kalman.predict(
                (kalman_state.x[0], kalman_state.x[1]),
                _mat(kalman_state.P),
                dt,
                self._f.q_weight * boost,
                self._f.q_trend * boost,
            )
            P = ((P[0][0] + P0[0][0], P[0][1]), (P[1][0], P[1][1] + P0[1][1]))
            upd = kalman.update(x, P, z, self.measurement_var(measurement.source))
            return KalmanState(x=upd.x, P=upd.P, timestamp=measurement.timestamp)
        return KalmanState(x=(z, 0.0), P=P0, timestamp=measurement.timestamp)

    def measurement_var(self, source: str) -> float:
        """R for a reading from ``source`` (remembered for the first sources seen)."""
        r = self._r_by_source.get(source)
        if r is None:
            r = self._f.measurement_var * self.config.sources.multiplier(source)
            if len(self._r_by_source) < _SOURCES_REMEMBERED:
                self._r_by_source[source] = r
        return r

    def reset_noise(self, reset_type: ResetType) -> tuple[tuple[float, float], tuple[float, float]]:
        """Q for one day at the start of the reset's adaptation (for the checkpoint)."""
        q = self._q1.get(reset_type)
        return q if q is not None else self._reset_noise(reset_type)

    def _reset_noise(
        self, reset_type: ResetType
    ) -> tuple[tuple[float, float], tuple[float, float]]:
        boost = self._r.boost(reset_type).q_multiplier
        return kalman.process_noise(1.0, self._f.q_weight * boost, self._f.q_trend * boost)

    def create_adaptation_state(
        self, reset_type: ResetType, timestamp: datetime
    ) -> AdaptationState:
        """Adaptation at the start: the full boost of this reset type."""
        boost = self._boosts.get(reset_type)
        if boost is None:
            boost = self._r.boost(reset_type)
        # is_adapting, adaptation_start, adaptation_factor, measurements_since_reset, reset_type
        return AdaptationState(True, timestamp, boost.q_multiplier, 0, reset_type)

    def buffer_after_reset(
        self,
        buffer: tuple[BufferedReading, ...],
        reset_type: ResetType,
        measurement: Measurement,
    ) -> tuple[BufferedReading, ...]:
        """A hard or initial reset starts the buffer anew; a soft one keeps recent history."""
        entry = BufferedReading.of(measurement)
        if reset_type is ResetType.SOFT:
            return self.push(buffer, entry)
        return (entry,)

    def push(
        self, buffer: tuple[BufferedReading, ...], entry: BufferedReading
    ) -> tuple[BufferedReading, ...]:
        """Append to the bounded buffer, keeping times ascending."""
        size = self._r.buffer_size
        out = (*buffer, entry)
        if buffer and entry.timestamp < buffer[-1].timestamp:
            out = tuple(sorted(out, key=lambda b: b.timestamp))
        return out[-size:]

    # -- adaptation -----------------------------------------------------------------------

    def advance(self, adaptation: AdaptationState, timestamp: datetime) -> AdaptationState:
        """Adaptation after one more accepted reading at ``timestamp``; ends when due."""
        if not adaptation.is_adapting or adaptation.reset_type is None:
            return adaptation if adaptation == NOT_ADAPTING else NOT_ADAPTING
        boost = self._boost(adaptation.reset_type)
        n = adaptation.measurements_since_reset + 1
        start = adaptation.adaptation_start or timestamp
        days = max(0.0, _days(start, timestamp))
        if n >= boost.adaptation_readings or days >= boost.adaptation_days:
            return NOT_ADAPTING
        weight = math.exp(-n / boost.decay_readings) * (1.0 - days / boost.adaptation_days)
        factor = 1.0 + (boost.q_multiplier - 1.0) * weight
        return replace(adaptation, adaptation_factor=factor, measurements_since_reset=n)

    def process_noise(self, adaptation: AdaptationState) -> tuple[float, float]:
        """(q_weight, q_trend) in effect: the base values times the adaptation factor."""
        factor = adaptation.adaptation_factor if adaptation.is_adapting else 1.0
        return self._f.q_weight * factor, self._f.q_trend * factor


def _days(start: datetime, end: datetime) -> float:
    return (end - start).total_seconds() / SECONDS_PER_DAY


def _mat(P: tuple[tuple[float, ...], ...]) -> kalman.Mat:
    return ((P[0][0], P[0][1]), (P[1][0], P[1][1]))
