"""When a reading restarts its user's filter: the reset triggers, and what a trigger must pass.

Four triggers, tried in order (thresholds in :class:`~weightstream.config.ResetConfig` and
:class:`~weightstream.config.RuleConfig`):

* the manager's own (:meth:`~weightstream.resets.manager.ResetManager.decide`): ``INITIAL``
  for a user with no filter, ``HARD`` after a long gap, ``SOFT`` for a manual entry far from
  the prediction;
* a **streak**: consecutive rejected readings that agree with this one (the filter, not
  they, is wrong);
* a **pound baseline**: a young filter whose readings come in at its value / 2.2046 (its
  baseline was pounds sent as kilograms);
* a **return**: a filter a streak took over a few readings ago, and a reading that agrees with
  the level the takeover displaced, not with the filter (:func:`_displaced_return`).

A takeover's baseline is provisional. A streak reset that displaces the user's first segment
keeps that segment's readings in the buffer, before the reset's own entry
(:func:`keep_displaced`); while the new filter adapts, a reading back at the displaced level
restarts the filter there at once. So a
clean first reading followed by a burst of another person's readings, which took the filter
over (a filter resting on one reading gives way to two), costs the person's own readings
nothing when they come back: the level seen before and after the burst wins, since a body
cannot go 15-40 kg away and back within days.

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
from weightstream.model import BufferedReading, Measurement, ResetType, UserState
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

__all__ = [
    "decide",
    "reset_rejection",
    "STREAK_TRIGGER",
    "POUND_TRIGGER",
    "BMI_TRIGGER",
    "MANUAL_BASELINE_TRIGGER",
    "GAP_TRIGGER",
    "RETURN_TRIGGER",
    "displaced",
    "keep_displaced",
]

STREAK_TRIGGER = "consistent rejected readings"
POUND_TRIGGER = "baseline looked like pounds sent as kg"
BMI_TRIGGER = "baseline looked like a BMI sent as kg"
MANUAL_BASELINE_TRIGGER = "manual baseline contradicted by a scale"
RETURN_TRIGGER = "back at the level a takeover displaced"
#: How the manager's gap trigger begins (resets.manager: "gap of N days").
GAP_TRIGGER = "gap of "
_DAY = float(SECONDS_PER_DAY)


def decide(
    manager: ResetManager,
    state: UserState | None,
    m: Measurement,
    predicted_weight: float | None,
    predicted_var: float | None = None,
) -> ResetDecision | None:
    """The reset ``m`` triggers for ``state`` (None: an ordinary filter step).

    The manager's triggers come first (a NEW user's initial reset among them); a manual
    entry's soft reset is kept only if the entry is also far in sigmas of the prediction
    (``predicted_var``: the predicted weight's variance; see :func:`_manual_agrees`). A user
    in NEEDS_RECOVERY is then checked for a streak, and a young filter for a baseline the
    reading disproves (pounds, a BMI, a manual entry the scale contradicts).
    """
    decision = manager.decide(state, m, predicted_weight)
    if (
        decision is not None
        and decision.reset_type is ResetType.SOFT
        and predicted_weight is not None
        and predicted_var is not None
        and _manual_agrees(manager, m, predicted_weight, predicted_var)
    ):
        decision = None
    if decision is not None or state is None or predicted_weight is None:
        return decision
    config = manager.config
    decision = _displaced_return(config, state, m, predicted_weight)
    if decision is None and phase_of(state) is Phase.NEEDS_RECOVERY:
        decision = _streak(config, state, m)
    if decision is None:
        decision = _pound_baseline(config, state, m, predicted_weight)
    if decision is None and config.rules.baseline_checks:
        decision = _disproved_baseline(config, state, m, predicted_weight)
    return decision


def _manual_agrees(
    manager: ResetManager, m: Measurement, predicted_weight: float, predicted_var: float
) -> bool:
    """Whether a manual entry far in kilograms is near in sigmas: an ordinary reading then.

    A manual entry ``resets.soft_threshold_kg`` from the prediction restarts the filter
    (soft) only if it is also ``resets.manual_reset_sigma`` standard deviations of the
    predicted reading (S = P00 + R) away. A filter that has not seen the user for weeks is
    uncertain by kilograms, and an entry within that doubt is information, not a reason to
    forget. An entry beyond it goes through the outlier rules; if the readings after it agree
    with it, the streak rule restarts the filter.
    """
    k = manager.config.resets.manual_reset_sigma
    if k <= 0.0:
        return False
    y = m.filter_kg - predicted_weight
    s = predicted_var + manager.measurement_var(m.source)
    return y * y < k * k * s


def _streak(config: Config, base: UserState, m: Measurement) -> ResetDecision | None:
    """Consecutive rejections that agree with this reading: the filter, not they, is wrong.

    A young filter (fewer than ``rules.established_readings`` accepted) gives way after
    ``rules.streak_new_user`` readings (a wrong first reading); one whose baseline is still
    provisional (:func:`_provisional`) after one reading more than it rests on (the majority);
    an established one only after ``rules.streak_established``, longer than a burst of
    another person's readings.
    """
    cfg = config.rules
    young = _young(base, cfg.established_readings)
    needed = (cfg.streak_new_user if young else cfg.streak_established) - 1
    if not young and _provisional(base, cfg.streak_established):
        # a provisional baseline gives way to a majority: one reading more than it rests on
        needed = max(cfg.streak_new_user, _resting_on(base) + 1) - 1
    if _resting_on(base) == 1 and cfg.streak_single_reading - 1 < needed:
        needed = cfg.streak_single_reading - 1
    recent = base.rejected[-needed:]
    if len(recent) < needed:
        return None
    values = [b.weight_kg for b in recent] + [m.filter_kg]
    if max(values) - min(values) > config.resets.soft_threshold_kg:
        return None
    if (m.timestamp - recent[0].timestamp).total_seconds() > cfg.streak_window_days * _DAY:
        return None
    return ResetDecision(ResetType.HARD, STREAK_TRIGGER)


def displaced(state: UserState) -> tuple[BufferedReading, ...]:
    """The readings a streak takeover displaced, while the filter it started adapts (else ()).

    They are the buffer's entries older than the last reset, while the adaptation is a hard
    reset's: only a streak reset keeps them (:func:`keep_displaced`). A gap's hard reset and
    the other hard triggers start the buffer anew; a soft reset keeps the buffer, but its
    adaptation is a soft one.
    """
    a = state.adaptation
    at = state.last_reset_at
    if not a.is_adapting or a.reset_type is not ResetType.HARD or at is None:
        return ()
    buffer = state.buffer
    n = 0
    while n < len(buffer) and buffer[n].timestamp < at:
        n += 1
    return buffer[:n]


def keep_displaced(
    base: UserState, buffer: tuple[BufferedReading, ...], size: int
) -> tuple[BufferedReading, ...]:
    """``buffer`` (a streak reset's new one) after the readings of the segment it displaces.

    The segment is the buffer's entries since ``base``'s last reset (all of them if it has
    none): what the displaced filter rested on. The buffer's own entries come first for its
    bound; the displaced ones fill what room is left.

    Only the user's first segment is remembered (no reset yet but the initial one). A segment
    a later reset began may itself be a return's, and remembering it lets two people who
    share a scale take turns: a household member whose reading came first, then weighed every
    few days, restarted the filter at each visit (7 of 7 of their readings accepted and 7 of
    20 of the user's rejected, against 1 and 1 before the return; remembering the first
    segment only: 2 and 2).
    """
    if base.last_reset_type not in (None, ResetType.INITIAL):
        return buffer
    segment = _segment(base)
    room = size - len(buffer)
    if room <= 0 or not segment:
        return buffer
    return (*segment[-room:], *buffer)


def _segment(state: UserState) -> tuple[BufferedReading, ...]:
    """The buffer's entries since the last reset (all of them if there was none)."""
    at = state.last_reset_at
    return tuple(b for b in state.buffer if at is None or b.timestamp >= at)


def _displaced_return(
    config: Config, state: UserState, m: Measurement, predicted_weight: float
) -> ResetDecision | None:
    """A reading back at the level a recent takeover displaced: restart the filter at it.

    While the filter a streak started still adapts (:func:`displaced`), the reading is at
    least ``resets.soft_threshold_kg`` from the prediction, nearer the last displaced reading
    than the prediction, within ``resets.soft_threshold_kg`` plus ``rules.max_rate_kg_per_day``
    per day of it, and within ``rules.streak_window_days`` of it. The level seen before and
    after the takeover's readings is the person's; the readings between were a burst (the
    takeover was the streak rule's mistake, and the returning reading proves it).
    """
    gone = displaced(state)
    if not gone:
        return None
    z = m.filter_kg
    far = abs(z - predicted_weight)
    if far < config.resets.soft_threshold_kg:
        return None
    last = gone[-1]
    days = (m.timestamp - last.timestamp).total_seconds() / _DAY
    if days > config.rules.streak_window_days:
        return None
    near = abs(z - last.weight_kg)
    allowed = config.resets.soft_threshold_kg + config.rules.max_rate_kg_per_day * max(0.0, days)
    if near >= far or near > allowed:
        return None
    return ResetDecision(ResetType.HARD, RETURN_TRIGGER)


def _resting_on(base: UserState) -> int:
    """How many accepted readings the filter rests on since its last reset (or in all)."""
    a = base.adaptation
    if a.is_adapting:
        return min(base.accepted_count, a.measurements_since_reset + 1)
    return base.accepted_count


def _young(base: UserState, established: int) -> bool:
    """Whether the filter rests on few readings: few in all, or few since a reset restarted it.

    A reset (a streak of another person's readings, a gap) leaves a filter resting on the
    readings since; while it adapts and they are fewer than ``established``, it gives way to
    a streak as readily as a new user's filter does. Without that, the readings that follow
    a burst which took the filter over were rejected six times before it came back. After a
    hard reset (a streak that took the filter over, a gap) that holds while it rests on no
    more than ``established`` readings: a burst of four after a single reading takes over at
    its second (:func:`_streak`'s single-reading rule) and rests on three by its end.
    """
    if base.accepted_count < established:
        return True
    a = base.adaptation
    if a.reset_type is ResetType.HARD:  # a takeover's own readings: up to established of them
        return a.is_adapting and a.measurements_since_reset < established
    return a.is_adapting and a.measurements_since_reset + 1 < established


def _provisional(base: UserState, established_streak: int) -> bool:
    """Whether the filter's baseline is still provisional: a segment an initial or hard reset
    started, still adapting, that rests on fewer readings than ``rules.streak_established``.

    Such a segment is no longer than a burst of another person's readings may be (a user's
    first readings can be one), so it gives way to a streak that outnumbers it, not only to
    one of ``rules.streak_established``. If it was right after all, the takeover remembers it
    and the first reading back at it restarts the filter there (:func:`_displaced_return`).

    Measured (tune seeds, ``outlier_bursts`` and ``mixed``, 4 replicates): giving way after
    ``rules.streak_new_user`` readings instead took over at more bursts early in a user's
    history (outlier recall 99.3% -> 97.9%, RMSE 1.02x -> 1.15x the oracle-fed filter); the
    majority leaves both as they were (99.2%, 1.02x).
    """
    a = base.adaptation
    if not a.is_adapting or a.reset_type not in (ResetType.INITIAL, ResetType.HARD):
        return False
    return _resting_on(base) < established_streak


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


def _disproved_baseline(
    config: Config, base: UserState, m: Measurement, expected: float
) -> ResetDecision | None:
    """A young filter whose first readings this one shows to be wrong: restart at it.

    While the filter rests on fewer than ``rules.established_readings`` readings:

    * its weight is BMI-sized (within ``rules.bmi_range``) and below 0.6 of this reading,
      the BMI rule seen from the other side (a BMI sent as kg as a user's first value);
    * every reading it rests on is a manual entry, and this one, from a scale or an
      integration, is at least ``resets.soft_threshold_kg`` from it (a typed 177 for 77).

    Without this the reading, and the next ones, were rejected against the wrong baseline
    until a streak of them restarted the filter.
    """
    if base.accepted_count >= config.rules.established_readings or not base.buffer:
        return None
    z = m.filter_kg
    low, high = config.rules.bmi_range
    if low <= expected <= high and expected < 0.6 * z:
        return ResetDecision(ResetType.HARD, BMI_TRIGGER)
    sources = config.sources
    if (
        not sources.is_manual(m.source)
        and all(sources.is_manual(b.source) for b in _segment(base))
        and abs(z - expected) >= config.resets.soft_threshold_kg
    ):
        return ResetDecision(ResetType.HARD, MANUAL_BASELINE_TRIGGER)
    return None


def _gap_streak(config: Config, base: UserState, m: Measurement) -> bool:
    """Readings after a gap that agree with each other: a new level, however far it moved.

    The last ``rules.gap_streak - 1`` rejected readings and ``m`` lie within
    ``resets.soft_threshold_kg`` of each other and within ``rules.streak_window_days``.
    """
    needed = config.rules.gap_streak - 1
    if needed < 0:
        return False
    recent = base.rejected[-needed:] if needed else ()
    if len(recent) < needed:
        return False
    values = [b.weight_kg for b in recent] + [m.filter_kg]
    if max(values) - min(values) > config.resets.soft_threshold_kg:
        return False
    window = config.rules.streak_window_days * _DAY
    return not recent or (m.timestamp - recent[0].timestamp).total_seconds() <= window


def reset_rejection(
    config: Config, base: UserState, m: Measurement, decision: ResetDecision
) -> Rejection | None:
    """Why the reading that triggers ``decision`` may not become the new baseline, if it may not."""
    if phase_of(base) is Phase.NEW or base.buffer == ():
        return None
    if decision.trigger == RETURN_TRIGGER:
        # The reading agrees with readings the rules accepted before the takeover: that is
        # its check (against the takeover's level, a 40-kg return is an implausible "jump").
        return None
    last = base.buffer[-1]
    z = m.filter_kg
    rules = RESET_RULES
    if decision.trigger in (POUND_TRIGGER, BMI_TRIGGER):
        rules = POUND_CORRECTION_RULES
    elif decision.trigger == MANUAL_BASELINE_TRIGGER:
        rules = STREAK_UP_RULES
    elif (
        decision.trigger.startswith(GAP_TRIGGER)
        and config.rules.gap_streak
        and _gap_streak(config, base, m)
    ):
        rules = STREAK_UP_RULES if z >= last.weight_kg else STREAK_DOWN_RULES
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
