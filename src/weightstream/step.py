"""One reading against one user's state: every decision about it, as a pure function.

``step(state, m, policy) -> Step`` holds everything weightstream decides about a reading that
is not a duplicate and not late: predict, reset triggers (:mod:`weightstream.resets.triggers`)
and the checks a triggering reading must pass, the outlier rules, the Kalman update,
adaptation and the bounded buffer, the validation of the state it would store, and the
reading's :class:`~weightstream.model.Result`. It takes values and returns values: no store,
no batch, no clock, no I/O. Every way in (``process_one``, the file engine, replay and
rebuild) calls it, so they cannot disagree.

A reset is decided here but not run here: it runs as a transaction behind the circuit
breaker, whose state outlives one reading. The step returns it as a :class:`ResetPlan`, and
the shell runs the one reset sequence, :func:`weightstream.resets.sequence.run_reset`.

The common path (an accepted or rejected ordinary reading) builds exactly one new
``UserState``, one ``KalmanState`` and one ``Result``; it runs once per reading, so it is
written without ``dataclasses.replace`` and with locals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime

from weightstream import copies, kalman
from weightstream.clock import SECONDS_PER_DAY
from weightstream.config import Config
from weightstream.faults import NO_FAULTS, FaultPoints
from weightstream.frozen import fast_init
from weightstream.lifecycle import Phase, phase_of
from weightstream.model import (
    BufferedReading,
    KalmanState,
    Measurement,
    Reason,
    ResetOutcome,
    ResetType,
    Result,
    UserState,
    Verdict,
)
from weightstream.offsets import Offsets, from_config, offset_kg
from weightstream.resets import triggers
from weightstream.resets.manager import ResetDecision, ResetManager
from weightstream.resets.recovery import RecoveredState
from weightstream.resets.validator import ResetOperation, StateValidator, persist_snapshot
from weightstream.rules import ORDINARY_RULES, RuleContext, first_rejection

__all__ = [
    "Policy",
    "Step",
    "ResetPlan",
    "step",
    "filter_step",
    "adopt",
    "from_last_good",
    "make_result",
    "plain_result",
    "predict",
    "shown_offset",
    "robust_var",
]

_DAY = float(SECONDS_PER_DAY)
_REJECTED_KEPT = 20
#: How many sources' unfiltered qualities a policy remembers (input sources are unbounded).
_SOURCES_REMEMBERED = 256
#: A filter state predicted to a reading's time: (x, P).
Prediction = tuple[kalman.Vec, kalman.Mat]


class Policy:
    """What a step needs besides the state and the reading: the configuration, built once.

    ``faults`` are the crash points and chaos the reset sequence passes through
    (:mod:`weightstream.faults`; inert by default). ``offsets`` are the configuration's
    ``[offsets]`` (:mod:`weightstream.offsets`), built once: :meth:`with_offset` gives a
    reading its offset where it comes in.
    """

    __slots__ = (
        "config",
        "manager",
        "validator",
        "faults",
        "_offsets",
        "offsets_empty",
        "_source_quality",
        "_unfiltered_quality",
    )

    def __init__(
        self,
        config: Config,
        *,
        manager: ResetManager | None = None,
        validator: StateValidator | None = None,
        faults: FaultPoints = NO_FAULTS,
    ) -> None:
        self.config = config
        self.faults = faults
        self.manager = manager or ResetManager(config)
        v = config.validation
        self.validator = validator or StateValidator(
            min_weight_kg=v.min_weight_kg, max_weight_kg=v.max_weight_kg
        )
        self.offsets = from_config(config.offsets)
        self._source_quality: dict[str, float] = {}
        # Per source, a reset's (or any unfiltered result's) quality and its components.
        self._unfiltered_quality: dict[str, tuple[float, tuple[tuple[str, float], ...]]] = {}

    @property
    def offsets(self) -> Offsets:
        return self._offsets

    @offsets.setter
    def offsets(self, offsets: Offsets) -> None:
        self._offsets = offsets
        #: ``offsets.empty``, read twice per reading: kept with the offsets it describes.
        self.offsets_empty: bool = offsets.empty

    def with_offset(self, m: Measurement) -> Measurement:
        """``m`` with its offset, unless it carries one already or no offsets are configured.

        A reading read back from the history keeps the offset it was decided with, so a
        replay decides exactly as live did.
        """
        if m.offset_kg or self.offsets_empty:
            return m
        off = offset_kg(self._offsets, m.source, m.timestamp)
        return replace(m, offset_kg=off) if off else m

    def source_quality(self, source: str) -> float:
        q = self._source_quality.get(source)
        if q is None:
            q = min(1.0, 1.0 / self.config.sources.multiplier(source))
            self._source_quality[source] = q
        return q

    def unfiltered_quality(self, source: str) -> tuple[float, tuple[tuple[str, float], ...]]:
        """The quality of a result with no rule context (a reset's), and its components:
        they depend on the source alone, so each source's are made once (bounded)."""
        known = self._unfiltered_quality.get(source)
        if known is None:
            components = _quality(self, source, None)
            known = (_weighted(components), components)
            if len(self._unfiltered_quality) < _SOURCES_REMEMBERED:
                self._unfiltered_quality[source] = known
        return known


@fast_init
@dataclass(frozen=True, slots=True)
class ResetPlan:
    """A reset the step decided on; the shell runs it (transaction, breaker, fallback)."""

    prior: UserState | None  # the stored state (None for a new user)
    base: UserState  # the state the reset starts from (a blank one for a new user)
    decision: ResetDecision


@fast_init
@dataclass(frozen=True, slots=True)
class Step:
    """What one reading does: the state to store (None: store none) and its result.

    When ``reset`` is set the reading triggers a reset; ``state`` and ``result`` are then
    None until the shell has run it. ``last_good`` marks a state to keep as last-known-good.
    """

    state: UserState | None
    result: Result | None
    reset: ResetPlan | None = None
    last_good: bool = False


def predict(state: UserState, m: Measurement, manager: ResetManager) -> Prediction:
    """The user's filter predicted to ``m``'s time (``state.kalman`` must be set)."""
    k = state.kalman
    assert k is not None
    q_w, q_t = manager.process_noise(state.adaptation)
    dt = max(0.0, (m.timestamp - k.timestamp).total_seconds() / _DAY)
    (p00, p01), (p10, p11) = k.P
    return kalman.predict((k.x[0], k.x[1]), ((p00, p01), (p10, p11)), dt, q_w, q_t)


def step(state: UserState | None, m: Measurement, policy: Policy) -> Step:
    """Decide reading ``m`` (not a duplicate, not late) against the stored ``state``."""
    base = state or UserState(user_id=m.user_id)
    if state is not None:
        copy = copies.copy_of(state.buffer, state.rejected, m)
        if copy is not None:
            return _copy(base, m, copy, policy)
    predicted = predict(base, m, policy.manager) if phase_of(base) is not Phase.NEW else None
    decision = triggers.decide(
        policy.manager,
        state,
        m,
        predicted[0][0] if predicted is not None else None,
        predicted[1][0][0] if predicted is not None else None,
    )
    if decision is not None:
        rejection = triggers.reset_rejection(policy.config, base, m, decision)
        if rejection is not None:
            return _reject(base, m, policy, rejection.reason, rejection.message, predicted)
        return Step(None, None, ResetPlan(state, base, decision))
    assert predicted is not None
    return filter_step(base, m, policy, predicted)


def filter_step(base: UserState, m: Measurement, policy: Policy, predicted: Prediction) -> Step:
    """The ordinary path: the outlier rules, then the Kalman update if the reading passes."""
    xp, Pp = predicted
    z = m.filter_kg  # the reading on the reference scale: its offset subtracted
    manager = policy.manager
    r = manager.measurement_var(m.source)
    y, s = z - xp[0], Pp[0][0] + r
    last = base.buffer[-1] if base.buffer else None
    days = (m.timestamp - last.timestamp).total_seconds() / _DAY if last else 0.0
    cfg = policy.config.rules
    change_var = 0.0
    if cfg.rate_noise_sigmas > 0.0:
        d = days if days > 0.0 else 0.0
        q_w = manager.process_noise(base.adaptation)[0]
        # two readings' noise, the level's random walk and the trend's doubt over d days
        change_var = 2.0 * r + q_w * d + Pp[1][1] * d * d
    ctx = RuleContext(
        weight_kg=z,
        timestamp=m.timestamp,
        expected_kg=xp[0],
        innovation=y,
        innovation_var=s,
        last_accepted_kg=last.weight_kg if last else None,
        days_since_accepted=days,
        trend_kg_per_day=xp[1],
        adapting=base.adaptation.is_adapting,
        config=cfg,
        change_var=change_var,
        gate_floor_sigma=_manual_gate(policy, m),
    )
    rejection = first_rejection(ORDINARY_RULES, ctx)
    if rejection is not None:
        return _reject(base, m, policy, rejection.reason, rejection.message, predicted)
    c = cfg.manual_robust_sigma if policy.config.sources.is_manual(m.source) else 0.0
    upd = kalman.update(xp, Pp, z, robust_var(c, y, s, Pp[0][0], r))
    k_new = KalmanState(x=upd.x, P=upd.P, timestamp=m.timestamp)
    new = UserState(
        user_id=base.user_id,
        kalman=k_new,
        adaptation=manager.advance(base.adaptation, m.timestamp),
        buffer=manager.push(base.buffer, _entry(m)),
        rejected=(),
        last_accepted_at=m.timestamp,
        last_event_at=_later(base.last_event_at, m.timestamp),
        last_reset_at=base.last_reset_at,
        last_reset_type=base.last_reset_type,
        accepted_count=base.accepted_count + 1,
        version=base.version + 1,
    )
    result = make_result(policy, m, Verdict.ACCEPTED, Reason.OK, "", k_new, ctx)
    return _checked(base, new, m, result, policy)


def _manual_gate(policy: Policy, m: Measurement) -> float:
    """The gate floor of a manual entry: within ``resets.manual_reset_sigma`` sigmas it is
    an ordinary reading (:func:`weightstream.resets.triggers.decide`), so it is not rejected
    there either (0 for other sources)."""
    config = policy.config
    if config.resets.manual_reset_sigma > 0.0 and config.sources.is_manual(m.source):
        return config.resets.manual_reset_sigma
    return 0.0


def robust_var(c: float, y: float, s: float, p00: float, r: float) -> float:
    """The variance a reading ``y`` from the prediction updates with: ``r``, or more beyond
    ``c`` sigmas (a Huber update; ``c`` = 0: off).

    Beyond ``c`` sigmas the variance is raised so that S' = S |y| / (c sqrt S): the step
    K' y = P00 y / S' is then the step of a reading exactly ``c`` sigmas away. A reading
    that disagrees (a manual entry a few kg off, a heavy-tailed integration) still counts,
    but cannot drag the filter further than a plausible one would.

    >>> robust_var(2.0, 1.0, 1.0, 0.5, 0.5)
    0.5
    >>> robust_var(2.0, 4.0, 1.0, 0.5, 0.5)  # 4 sigma: S' = 2 S, the step of a 2-sigma one
    1.5
    """
    if c > 0.0 and y * y > c * c * s:
        return s * (abs(y) / (c * math.sqrt(s))) - p00
    return r


def _reject(
    base: UserState,
    m: Measurement,
    policy: Policy,
    reason: Reason,
    message: str,
    predicted: Prediction | None,
) -> Step:
    new = replace(
        base,
        rejected=(*base.rejected, _entry(m))[-_REJECTED_KEPT:],
        last_event_at=_later(base.last_event_at, m.timestamp),
        version=base.version + 1,
    )
    shown = None
    if predicted is not None:
        shown = KalmanState(x=predicted[0], P=predicted[1], timestamp=m.timestamp)
    result = make_result(policy, m, Verdict.REJECTED, reason, message, shown, None)
    return _checked(base, new, m, result, policy)


def _copy(base: UserState, m: Measurement, copy: copies.Copy, policy: Policy) -> Step:
    """Reading ``m`` repeats one the state remembers: a duplicate, kept in the history only.

    The filter does not see it (no new weight, no new buffer entry); the state records that
    it was seen (its time), as for a rejected reading.
    """
    new = replace(
        base, last_event_at=_later(base.last_event_at, m.timestamp), version=base.version + 1
    )
    return Step(new, plain_result(policy, m, Verdict.DUPLICATE, copy.reason, copy.message))


def _checked(
    base: UserState, new: UserState, m: Measurement, result: Result, policy: Policy
) -> Step:
    """``new`` if it may be stored; else the old state kept and the reading rejected, with why."""
    validator = policy.validator
    if base.version and validator.step_ok(base, new):  # step_ok refuses a state with no filter
        return Step(new, result)
    problems = validator.problems(
        persist_snapshot(base if base.version else None, new), ResetOperation.STATE_PERSIST
    )
    if not problems:
        return Step(new, result)
    # A filter step that would persist an invalid state: keep the old one, say why.
    result = replace(
        result,
        verdict=Verdict.REJECTED,
        reason=Reason.RESET_FAILED,
        message="state failed validation: " + "; ".join(problems),
    )
    kept = replace(
        base, last_event_at=_later(base.last_event_at, m.timestamp), version=base.version + 1
    )
    return Step(None if validator.user_state_problems(kept) else kept, result)


def adopt(
    base: UserState,
    m: Measurement,
    recovered: RecoveredState,
    reset_type: ResetType,
    policy: Policy,
) -> Step:
    """Take a recovered state as the user's state at reading ``m`` (after a failed reset)."""
    manager = policy.manager
    new = replace(
        base,
        kalman=recovered.kalman,
        adaptation=recovered.adaptation,
        buffer=manager.push(() if reset_type is not ResetType.SOFT else base.buffer, _entry(m)),
        rejected=(),
        last_accepted_at=m.timestamp,
        last_event_at=_later(base.last_event_at, m.timestamp),
        last_reset_at=m.timestamp,
        last_reset_type=reset_type,
        accepted_count=base.accepted_count + 1,
        version=base.version + 1,
    )
    problems = policy.validator.problems(
        persist_snapshot(base if base.version else None, new), ResetOperation.STATE_PERSIST
    )
    if problems:
        result = make_result(
            policy,
            m,
            Verdict.REJECTED,
            Reason.RESET_FAILED,
            "reset failed and no valid fallback state",
            base.kalman,
            None,
            reset_type=reset_type,
            reset_outcome=ResetOutcome.FAILED,
        )
        kept = replace(
            base, last_event_at=_later(base.last_event_at, m.timestamp), version=base.version + 1
        )
        return Step(None if policy.validator.user_state_problems(kept) else kept, result)
    result = make_result(
        policy,
        m,
        Verdict.ACCEPTED,
        Reason.OK,
        "",
        new.kalman,
        None,
        reset_type=reset_type,
        reset_outcome=recovered.outcome,
    )
    return Step(new, result, last_good=True)


def from_last_good(good: UserState, base: UserState, m: Measurement, policy: Policy) -> Step:
    """Reading ``m`` filtered from the last-known-good state ``good`` (after a failed reset)."""
    fallback = replace(good, version=base.version, user_id=base.user_id)
    s = filter_step(fallback, m, policy, predict(fallback, m, policy.manager))
    assert s.result is not None
    result = replace(s.result, reset_type=None, reset_outcome=ResetOutcome.FALLBACK_LAST_GOOD)
    return Step(s.state, result)


def make_result(
    policy: Policy,
    m: Measurement,
    verdict: Verdict,
    reason: Reason,
    message: str,
    k: KalmanState | None,
    ctx: RuleContext | None,
    *,
    reset_type: ResetType | None = None,
    reset_outcome: ResetOutcome | None = None,
) -> Result:
    """The result of reading ``m``: its verdict, the filter as shown, and its quality."""
    if ctx is None:
        quality, components = policy.unfiltered_quality(m.source)
    else:
        components = _quality(policy, m.source, ctx)
        quality = _weighted(components)
    return Result(
        reading_id=m.reading_id,
        user_id=m.user_id,
        verdict=verdict,
        reason=reason,
        message=message,
        timestamp=m.timestamp,
        source=m.source,
        weight_kg=m.weight_kg,
        filtered_weight=k.x[0] if k else None,
        trend_kg_week=k.x[1] * 7.0 if k else None,
        std_kg=k.weight_std if k else None,
        reset_type=reset_type,
        reset_outcome=reset_outcome,
        quality=quality,
        quality_components=components,
        offset_kg=shown_offset(policy, m),
    )


def plain_result(
    policy: Policy,
    m: Measurement,
    verdict: Verdict,
    reason: Reason,
    message: str,
    row: int | None = None,
) -> Result:
    """The result of a reading the filter does not see (a copy, a duplicate, a late one)."""
    return Result(
        reading_id=m.reading_id,
        user_id=m.user_id,
        verdict=verdict,
        reason=reason,
        message=message,
        row=row,
        timestamp=m.timestamp,
        source=m.source,
        weight_kg=m.weight_kg,
        offset_kg=shown_offset(policy, m),
    )


def shown_offset(policy: Policy, m: Measurement) -> float | None:
    """The offset a result shows: ``m``'s, or None when it has none and none are configured."""
    return m.offset_kg if m.offset_kg or not policy.offsets_empty else None


def _weighted(components: tuple[tuple[str, float], ...]) -> float:
    """The quality of a reading from its components (innovation, rate, source)."""
    return 0.6 * components[0][1] + 0.25 * components[1][1] + 0.15 * components[2][1]


def _quality(
    policy: Policy, source_name: str, ctx: RuleContext | None
) -> tuple[tuple[str, float], ...]:
    """Descriptive quality in [0, 1]: how well the reading fits (not used to decide)."""
    source = policy.source_quality(source_name)
    if ctx is None:
        return (("innovation", 1.0), ("rate", 1.0), ("source", source))
    innovation = math.exp(-0.5 * ctx.innovation * ctx.innovation / ctx.innovation_var)
    rate = 1.0
    if ctx.last_accepted_kg is not None:
        cfg = ctx.config
        allowed = cfg.rate_slack_kg + cfg.max_rate_kg_per_day * ctx.days_since_accepted
        rate = max(0.0, 1.0 - abs(ctx.weight_kg - ctx.last_accepted_kg) / allowed)
    return (("innovation", innovation), ("rate", rate), ("source", source))


def _entry(m: Measurement) -> BufferedReading:
    return BufferedReading.of(m)


def _later(a: datetime | None, b: datetime) -> datetime:
    return b if a is None or b > a else a
