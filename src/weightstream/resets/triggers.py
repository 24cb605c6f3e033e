"""When a reading restarts its user's filter: the reset triggers, and what a trigger must pass.

Four triggers, tried in order (thresholds in :class:`~weightstream.config.ResetConfig` and
:class:`~weightstream.config.RuleConfig`):

* the manager's own (:meth:`~weightstream.resets.manager.ResetManager.decide`): ``INITIAL``
  for a user with no filter, ``HARD`` after a long gap, ``SOFT`` for a manual entry far from
  the prediction;
* a **streak**: consecutive rejected readings that agree with this one (the filter, not
  they, is wrong);
* a **pound baseline**: a young filter whose readings come in at its value / 2.2046 (its
  baseline was pounds sent as kilograms).

Every weight here is on the reference scale: a reading's
:attr:`~weightstream.model.Measurement.filter_kg` against the buffer's entries (stored less
their offsets).

A reset-triggering reading is never taken unchecked (the reference system made an outlier
after a long gap the new baseline): :func:`reset_rejection` runs the trigger's named rule set
from :mod:`weightstream.rules` against the last accepted weight.

Pure functions of values: no store, no clock.
"""

from __future__ import annotations

from weightstream.clock import SECONDS_PER_DAY
from weightstream.config import Config
from weightstream.lifecycle import Phase, phase_of
from weightstream.model import Measurement, ResetType, UserState
from weightstream.resets.manager import ResetDecision, ResetManager
from weightstream.rules import (
    LB_PER_KG,
    POUND_CORRECTION_RULES,
    RESET_RULES,
    STREAK_DOWN_RULES,
    STREAK_UP_RULES,
    Rejection,
    RuleContext,
    first_rejection,
)

__all__ = ["decide", "reset_rejection", "STREAK_TRIGGER", "POUND_TRIGGER"]

STREAK_TRIGGER = "consistent rejected readings"
POUND_TRIGGER = "baseline looked like pounds sent as kg"
_DAY = float(SECONDS_PER_DAY)


def decide(
    manager: ResetManager,
    state: UserState | None,
    m: Measurement,
    predicted_weight: float | None,
) -> ResetDecision | None:
    """The reset ``m`` triggers for ``state`` (None: an ordinary filter step).

    The manager's triggers come first (a NEW user's initial reset among them); a user in
    NEEDS_RECOVERY is then checked for a streak, and a young filter for a pound baseline.
    """
    decision = manager.decide(state, m, predicted_weight)
    if decision is not None or state is None or predicted_weight is None:
        return decision
    if phase_of(state) is Phase.NEEDS_RECOVERY:
        decision = _streak(manager.config, state, m)
    if decision is None:
        decision = _pound_baseline(manager.config, state, m, predicted_weight)
    return decision


def _streak(config: Config, base: UserState, m: Measurement) -> ResetDecision | None:
    """Consecutive rejections that agree with this reading: the filter, not they, is wrong.

    A young filter (fewer than ``rules.established_readings`` accepted) gives way after
    ``rules.streak_new_user`` readings (a wrong first reading); an established one only after
    ``rules.streak_established``, longer than a burst of another person's readings.
    """
    cfg = config.rules
    needed = (
        cfg.streak_new_user if _young(base, cfg.established_readings) else cfg.streak_established
    ) - 1
    recent = base.rejected[-needed:]
    if len(recent) < needed:
        return None
    values = [b.weight_kg for b in recent] + [m.filter_kg]
    if max(values) - min(values) > config.resets.soft_threshold_kg:
        return None
    if (m.timestamp - recent[0].timestamp).total_seconds() > cfg.streak_window_days * _DAY:
        return None
    return ResetDecision(ResetType.HARD, STREAK_TRIGGER)


def _young(base: UserState, established: int) -> bool:
    """Whether the filter rests on few readings: few in all, or few since a reset restarted it.

    A reset (a streak of another person's readings, a gap) leaves a filter resting on the
    readings since; while it adapts and they are fewer than ``established``, it gives way to
    a streak as readily as a new user's filter does. Without that, the readings that follow
    a burst which took the filter over were rejected six times before it came back.
    """
    if base.accepted_count < established:
        return True
    a = base.adaptation
    return a.is_adapting and a.measurements_since_reset + 1 < established


def _pound_baseline(
    config: Config, base: UserState, m: Measurement, expected: float
) -> ResetDecision | None:
    """A young filter whose readings come in at expected / 2.2046: the baseline was pounds.

    Pounds sent as kilograms is the common unit error in exports; "kilograms converted
    twice" is rare. So while the filter rests on few readings, a reading that would be
    rejected as the latter restarts the filter at it instead (the streak rule would get
    there too, but only after rejecting two good readings).
    """
    if base.accepted_count >= config.rules.established_readings:
        return None
    if abs(m.filter_kg * LB_PER_KG / expected - 1.0) > config.rules.unit_error_tolerance:
        return None
    return ResetDecision(ResetType.HARD, POUND_TRIGGER)


def reset_rejection(
    config: Config, base: UserState, m: Measurement, decision: ResetDecision
) -> Rejection | None:
    """Why the reading that triggers ``decision`` may not become the new baseline, if it may not."""
    if phase_of(base) is Phase.NEW or base.buffer == ():
        return None
    last = base.buffer[-1]
    z = m.filter_kg
    rules = RESET_RULES
    if decision.trigger == POUND_TRIGGER:
        rules = POUND_CORRECTION_RULES
    elif decision.trigger == STREAK_TRIGGER:
        # Consistent readings ~1/2.2046 of the baseline: the baseline was the unit error.
        rules = STREAK_DOWN_RULES if z < last.weight_kg else STREAK_UP_RULES
    days = (m.timestamp - last.timestamp).total_seconds() / _DAY
    ctx = RuleContext(
        weight_kg=z,
        timestamp=m.timestamp,
        expected_kg=last.weight_kg,
        innovation=z - last.weight_kg,
        innovation_var=1.0,
        last_accepted_kg=last.weight_kg,
        days_since_accepted=days,
        trend_kg_per_day=0.0,
        adapting=True,
        config=config.rules,
    )
    return first_rejection(rules, ctx)
