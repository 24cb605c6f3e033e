"""The orchestration shell: one reading in, one result out, state committed once.

``Processor.process_one(m)`` changes state and commits it (state, the reading, its result,
any reset audit and recovery attempts in ONE store transaction); ``Processor.estimate(user)``
only reads. For files, :class:`Batch` groups many readings into one unit of work (group
commit); the per-reading logic is the same function, :meth:`Processor._step`.

A reading's path:

1. duplicate (same key, or same user/time/value/unit/source)? -> ``duplicate``, nothing else;
2. older than the user's last processed reading? -> the late policy (replay or ``late``);
3. a reset due (:class:`~weightstream.resets.manager.ResetManager`)? The triggering reading
   must first pass the reset rules (no unchecked baseline), then the reset runs as a
   :class:`~weightstream.resets.transaction.ResetTransaction` through the circuit breaker.
   A failure rolls back, counts against the breaker, and the reading is processed on the
   fallback chain (last-known-good state, then the recovery service), never dropped;
4. otherwise predict, run the outlier rules, and update the filter if accepted.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from weightstream import faults, kalman
from weightstream.clock import SYSTEM_CLOCK, Clock
from weightstream.config import Config
from weightstream.errors import (
    CircuitOpenError,
    ConflictError,
    ResetError,
    StateCorruptionError,
    StorageError,
)
from weightstream.model import (
    AdaptationState,
    BufferedReading,
    KalmanState,
    Measurement,
    Reason,
    RecoveryAttempt,
    ResetAudit,
    ResetOutcome,
    ResetType,
    Result,
    UserState,
    Verdict,
)
from weightstream.observe import Observer
from weightstream.resets.breaker import CircuitBreaker
from weightstream.resets.manager import ResetDecision, ResetManager
from weightstream.resets.recovery import RecoveredState, ResetRecoveryService
from weightstream.resets.transaction import ResetTransaction
from weightstream.resets.validator import (
    ResetOperation,
    StateValidator,
    adaptation_snapshot,
    buffer_snapshot,
    kalman_snapshot,
    persist_snapshot,
)
from weightstream.rules import (
    LB_PER_KG,
    Rejection,
    RuleContext,
    default_rules,
    first_rejection,
    reset_rules,
)
from weightstream.store.base import StateStore, UnitOfWork

__all__ = ["Processor", "Batch", "Estimate"]

_DAY = 86_400.0
_REJECTED_KEPT = 20
_RETRIES = 3
STREAK_TRIGGER = "consistent rejected readings"
POUND_TRIGGER = "baseline looked like pounds sent as kg"
_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Estimate:
    """A read-only view of a user's filtered trajectory at its last accepted reading."""

    user_id: str
    timestamp: datetime
    weight_kg: float
    trend_kg_week: float
    std_kg: float
    adapting: bool
    accepted_count: int
    version: int


class Processor:
    """Per-user Kalman processing over a :class:`~weightstream.store.base.StateStore`."""

    def __init__(
        self,
        store: StateStore,
        config: Config | None = None,
        *,
        clock: Clock = SYSTEM_CLOCK,
        observer: Observer | None = None,
        breaker: CircuitBreaker | None = None,
        manager: ResetManager | None = None,
        validator: StateValidator | None = None,
        recovery: ResetRecoveryService | None = None,
    ) -> None:
        self.store = store
        self.config = config or Config()
        self.clock = clock
        self.observer = observer or Observer()
        self.manager = manager or ResetManager(self.config)
        v = self.config.validation
        self.validator = validator or StateValidator(
            min_weight_kg=v.min_weight_kg, max_weight_kg=v.max_weight_kg
        )
        b = self.config.breaker
        self.breaker = breaker or CircuitBreaker(
            failure_threshold=b.failure_threshold,
            timeout=b.timeout_s,
            success_threshold=b.success_threshold,
            clock=clock,
            probe_timeout=b.probe_timeout_s,
            name="reset",
            exclude=(StorageError,),  # a store outage is not a reset failure
        )
        self.breaker.add_listener(
            lambda old, new: self.observer.breaker_changed(str(old), str(new))
        )
        self.recovery = recovery or ResetRecoveryService(
            store, self.manager, clock=clock, validator=self.validator
        )
        self._rules = default_rules()
        self._reset_rules = reset_rules()
        self._cache: dict[str, UserState] = {}

    # -- public verbs -----------------------------------------------------------------------

    def process_one(self, m: Measurement, *, row: int | None = None) -> Result:
        """Process one reading and commit its effects. Returns its result.

        A unit that met another writer (:class:`ConflictError`) was not stored at all, so it is
        redone from fresh state, up to ``_RETRIES`` times; a reading that the other writer
        stored meanwhile then comes back as ``duplicate``. A lock held past the busy timeout
        (:class:`StoreBusyError`) and other storage errors reach the caller unretried.
        """
        for attempt in range(_RETRIES + 1):
            try:
                return Batch(self, input_id=None, direct=True).process(m, row=row)
            except ConflictError:
                self.forget([m.user_id])
                if attempt == _RETRIES:
                    raise
        raise AssertionError("unreachable")

    def process_many(self, readings: Iterable[Measurement]) -> list[Result]:
        """Process readings in the given order, one commit each (library convenience)."""
        return [self.process_one(m) for m in readings]

    def estimate(self, user_id: str) -> Estimate | None:
        """The user's current filtered weight, trend and uncertainty. Changes nothing."""
        state = self.load_state(user_id)
        if state is None or state.kalman is None:
            return None
        k = state.kalman
        return Estimate(
            user_id=user_id,
            timestamp=k.timestamp,
            weight_kg=k.x[0],
            trend_kg_week=k.x[1] * 7.0,
            std_kg=k.weight_std,
            adapting=state.adaptation.is_adapting,
            accepted_count=state.accepted_count,
            version=state.version,
        )

    def load_state(self, user_id: str) -> UserState | None:
        """The committed state (cached), validated: a corrupt row raises StateCorruptionError."""
        state = self._cache.get(user_id)
        if state is None:
            state = self.store.load_state(user_id)
            if state is not None:
                state = self._checked(state)
                self._cache[user_id] = state
        return state

    def _checked(self, state: UserState) -> UserState:
        """``state`` if valid; else the user rebuilt from history (and stored), others untouched."""
        try:
            self.check_loaded(state)
            return state
        except StateCorruptionError as exc:
            from weightstream.replay import apply_rebuild, rebuild_user

            _log.warning("user %s: %s; rebuilding from history", state.user_id, exc.message)
            rebuilt = apply_rebuild(
                self.store, rebuild_user(self.store, state.user_id, self.config)
            )
            if rebuilt is None:
                raise
            self.check_loaded(rebuilt)
            return rebuilt

    def check_loaded(self, state: UserState) -> None:
        problems = self.validator.user_state_problems(state)
        if problems:
            raise StateCorruptionError(
                f"stored state fails validation: {'; '.join(problems)}", user_id=state.user_id
            )

    def forget(self, user_ids: Iterable[str] | None = None) -> None:
        """Drop cached committed states (after a conflict, or to re-read the store)."""
        if user_ids is None:
            self._cache.clear()
        else:
            for uid in user_ids:
                self._cache.pop(uid, None)

    # -- the step ---------------------------------------------------------------------------

    def _step(self, state: UserState | None, m: Measurement, sink: Batch) -> Result:
        """Decide ``m`` against ``state``; stage the new state and result into ``sink``."""
        base = state or UserState(user_id=m.user_id)
        k = base.kalman
        predicted: tuple[kalman.Vec, kalman.Mat] | None = None
        if k is not None:
            q_w, q_t = self.manager.process_noise(base.adaptation)
            dt = max(0.0, (m.timestamp - k.timestamp).total_seconds() / _DAY)
            predicted = kalman.predict((k.x[0], k.x[1]), _mat(k.P), dt, q_w, q_t)
        decision = self.manager.decide(
            state if k is not None else None, m, predicted[0][0] if predicted else None
        )
        if decision is None and base.rejected and predicted is not None:
            decision = self._streak_reset(base, m)
        if decision is None and predicted is not None:
            decision = self._pound_baseline(base, m, predicted[0][0])
        if decision is not None:
            rejection = self._reset_rejection(base, m, decision)
            if rejection is not None:
                return self._reject(base, m, sink, rejection.reason, rejection.message, predicted)
            return self._reset(state, base, m, decision, sink)
        assert predicted is not None and k is not None
        return self._filter(base, m, sink, predicted)

    def _streak_reset(self, base: UserState, m: Measurement) -> ResetDecision | None:
        """Consecutive rejections that agree with this reading: the filter, not they, is wrong.

        A young filter (fewer than ``rules.established_readings`` accepted) gives way after
        ``rules.streak_new_user`` readings (a wrong first reading); an established one only
        after ``rules.streak_established``, longer than a burst of another person's readings.
        """
        cfg = self.config.rules
        young = base.accepted_count < cfg.established_readings
        needed = (cfg.streak_new_user if young else cfg.streak_established) - 1
        recent = base.rejected[-needed:]
        if len(recent) < needed:
            return None
        values = [b.weight_kg for b in recent] + [m.weight_kg]
        if max(values) - min(values) > self.config.resets.soft_threshold_kg:
            return None
        if (m.timestamp - recent[0].timestamp).total_seconds() > cfg.streak_window_days * _DAY:
            return None
        return ResetDecision(ResetType.HARD, STREAK_TRIGGER)

    def _pound_baseline(
        self, base: UserState, m: Measurement, expected: float
    ) -> ResetDecision | None:
        """A young filter whose readings come in at expected / 2.2046: the baseline was pounds.

        Pounds sent as kilograms is the common unit error in exports; "kilograms converted
        twice" is rare. So while the filter rests on few readings, a reading that would be
        rejected as the latter restarts the filter at it instead (the streak rule would get
        there too, but only after rejecting two good readings).
        """
        if base.accepted_count >= self.config.rules.established_readings:
            return None
        tol = self.config.rules.unit_error_tolerance
        if abs(m.weight_kg * LB_PER_KG / expected - 1.0) > tol:
            return None
        return ResetDecision(ResetType.HARD, POUND_TRIGGER)

    def _reset_rejection(
        self, base: UserState, m: Measurement, decision: ResetDecision
    ) -> Rejection | None:
        if base.kalman is None or base.buffer == ():
            return None
        last = base.buffer[-1]
        rules = self._reset_rules
        if decision.trigger == POUND_TRIGGER:
            rules = rules[1:2]  # the reading is the correction; only the BMI check applies
        elif decision.trigger == STREAK_TRIGGER:
            rules = rules[:2]  # unit error and BMI still apply; the jump is the point
            if m.weight_kg < last.weight_kg:
                # Consistent readings ~1/2.2046 of the baseline: the baseline was the unit error.
                rules = rules[1:2]
        days = (m.timestamp - last.timestamp).total_seconds() / _DAY
        ctx = RuleContext(
            weight_kg=m.weight_kg,
            timestamp=m.timestamp,
            expected_kg=last.weight_kg,
            innovation=m.weight_kg - last.weight_kg,
            innovation_var=1.0,
            last_accepted_kg=last.weight_kg,
            days_since_accepted=days,
            trend_kg_per_day=0.0,
            adapting=True,
            config=self.config.rules,
        )
        return first_rejection(rules, ctx)

    def _filter(
        self,
        base: UserState,
        m: Measurement,
        sink: Batch,
        predicted: tuple[kalman.Vec, kalman.Mat],
    ) -> Result:
        xp, Pp = predicted
        z = m.weight_kg
        r = self.manager.measurement_var(m.source)
        y, s = z - xp[0], Pp[0][0] + r
        last = base.buffer[-1] if base.buffer else None
        days = (m.timestamp - last.timestamp).total_seconds() / _DAY if last else 0.0
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
            config=self.config.rules,
        )
        rejection = first_rejection(self._rules, ctx)
        if rejection is not None:
            return self._reject(base, m, sink, rejection.reason, rejection.message, predicted)
        upd = kalman.update(xp, Pp, z, r)
        k_new = KalmanState(x=upd.x, P=upd.P, timestamp=m.timestamp)
        # Direct construction, not dataclasses.replace: this line runs once per reading.
        new = UserState(
            user_id=base.user_id,
            kalman=k_new,
            adaptation=self.manager.advance(base.adaptation, m.timestamp),
            buffer=self.manager.push(base.buffer, _entry(m)),
            rejected=(),
            last_accepted_at=m.timestamp,
            last_event_at=_later(base.last_event_at, m.timestamp),
            last_reset_at=base.last_reset_at,
            last_reset_type=base.last_reset_type,
            accepted_count=base.accepted_count + 1,
            version=base.version + 1,
        )
        result = self._result(m, Verdict.ACCEPTED, Reason.OK, "", k_new, ctx, sink.row)
        self._persist_plain(base, new, m, result, sink)
        return result

    def _reject(
        self,
        base: UserState,
        m: Measurement,
        sink: Batch,
        reason: str,
        message: str,
        predicted: tuple[kalman.Vec, kalman.Mat] | None,
    ) -> Result:
        new = replace(
            base,
            rejected=(*base.rejected, _entry(m))[-_REJECTED_KEPT:],
            last_event_at=_later(base.last_event_at, m.timestamp),
            version=base.version + 1,
        )
        shown = None
        if predicted is not None:
            shown = KalmanState(x=predicted[0], P=predicted[1], timestamp=m.timestamp)
        result = self._result(m, Verdict.REJECTED, reason, message, shown, None, sink.row)
        self._persist_plain(base, new, m, result, sink)
        return result

    def _persist_plain(
        self, base: UserState, new: UserState, m: Measurement, result: Result, sink: Batch
    ) -> None:
        if base.version and new.kalman is not None and self.validator.step_ok(base, new):
            sink.stage(new, m, result)
            return
        problems = self.validator.problems(
            persist_snapshot(base if base.version else None, new), ResetOperation.STATE_PERSIST
        )
        if problems:
            # A filter step that would persist an invalid state: keep the old one, say why.
            result = replace(
                result,
                verdict=Verdict.REJECTED,
                reason=Reason.RESET_FAILED,
                message="state failed validation: " + "; ".join(problems),
            )
            new = replace(
                base,
                last_event_at=_later(base.last_event_at, m.timestamp),
                version=base.version + 1,
            )
            if self.validator.user_state_problems(new):
                sink.stage(None, m, result)
                return
        sink.stage(new, m, result)

    # -- resets ---------------------------------------------------------------------------

    def _reset(
        self,
        state: UserState | None,
        base: UserState,
        m: Measurement,
        decision: ResetDecision,
        sink: Batch,
    ) -> Result:
        txn = ResetTransaction(
            m.user_id,
            reading_id=m.reading_id,
            reset_type=decision.reset_type,
            trigger=decision.trigger,
            validator=self.validator,
            clock=self.clock,
            verify_restored=lambda: sink.current(m.user_id) == state,
            on_rollback_verified=lambda op, ok: sink.after_commit(  # only once durable
                lambda v: self.observer.rollback_verified(*v), (op, ok)
            ),
        )
        try:
            if self.config.resets.transactional:
                result: Result = self.breaker.call(self._run_reset, txn, base, m, decision, sink)
            else:
                result = self.breaker.call(self._run_reset_plain, txn, base, m, decision, sink)
            return result
        except CircuitOpenError as exc:
            txn.failure_reason = str(exc)
            txn.outcome = "breaker_open"
        except ResetError as exc:
            if isinstance(exc.__cause__, StorageError):
                raise exc.__cause__ from None
        return self._fallback(state, base, m, decision, txn, sink)

    def _run_reset(
        self,
        txn: ResetTransaction,
        base: UserState,
        m: Measurement,
        decision: ResetDecision,
        sink: Batch,
    ) -> Result:
        reset_type = decision.reset_type
        with txn:
            faults.crash_point("reset.kalman")
            faults.chaos("reset")
            k = self.manager.apply_reset(base.kalman, reset_type, m)
            txn.require_valid(
                ResetOperation.KALMAN_RESET,
                kalman_snapshot(
                    k, self.manager.reset_noise(reset_type), self.manager.measurement_var(m.source)
                ),
            )
            faults.crash_point("reset.adaptation")
            adaptation = self.manager.create_adaptation_state(reset_type, m.timestamp)
            txn.require_valid(
                ResetOperation.ADAPTATION_CREATE, adaptation_snapshot(adaptation, m.timestamp)
            )
            faults.crash_point("reset.buffer")
            buffer = self.manager.buffer_after_reset(base.buffer, reset_type, m)
            txn.require_valid(
                ResetOperation.BUFFER_UPDATE,
                buffer_snapshot(buffer, self.config.resets.buffer_size),
            )
            new = self._reset_state(base, m, k, adaptation, buffer, reset_type)
            txn.require_valid(
                ResetOperation.STATE_PERSIST, persist_snapshot(base if base.version else None, new)
            )
            faults.crash_point("reset.persist")
            faults.chaos("persist")
            result = self._reset_result(m, new, reset_type, ResetOutcome.COMMITTED)
            audit = _committed_audit(txn)
            mark = sink.stage(new, m, result, audits=[audit], last_good=True)
            txn.add_undo(ResetOperation.STATE_PERSIST, lambda: sink.unstage(mark))
            sink.flush_direct()  # process_one: the one store transaction, inside the reset
            txn.mark_completed(ResetOperation.STATE_PERSIST)
        sink.after_commit(self.observer.reset_finished, audit)
        return result

    def _run_reset_plain(
        self,
        txn: ResetTransaction,
        base: UserState,
        m: Measurement,
        decision: ResetDecision,
        sink: Batch,
    ) -> Result:
        """The plain sequence (flag ``resets.transactional = false``): no checks, no undo."""
        reset_type = decision.reset_type
        try:
            faults.chaos("reset")
            k = self.manager.apply_reset(base.kalman, reset_type, m)
            adaptation = self.manager.create_adaptation_state(reset_type, m.timestamp)
            buffer = self.manager.buffer_after_reset(base.buffer, reset_type, m)
            new = self._reset_state(base, m, k, adaptation, buffer, reset_type)
            faults.chaos("persist")
            result = self._reset_result(m, new, reset_type, ResetOutcome.COMMITTED)
            txn.commit()
            audit = txn.audit()
            sink.stage(new, m, result, audits=[audit], last_good=True)
            sink.flush_direct()
        except Exception as exc:
            txn.outcome = "rolled_back"
            txn.failure_reason = f"{type(exc).__name__}: {exc}"
            raise ResetError(txn.failure_reason, user_id=m.user_id) from exc
        sink.after_commit(self.observer.reset_finished, audit)
        return result

    def _reset_state(
        self,
        base: UserState,
        m: Measurement,
        k: KalmanState,
        adaptation: AdaptationState,
        buffer: tuple[BufferedReading, ...],
        reset_type: ResetType,
    ) -> UserState:
        return UserState(
            user_id=base.user_id,
            kalman=k,
            adaptation=adaptation,
            buffer=buffer,
            rejected=(),
            last_accepted_at=m.timestamp,
            last_event_at=_later(base.last_event_at, m.timestamp),
            last_reset_at=m.timestamp,
            last_reset_type=reset_type,
            accepted_count=base.accepted_count + 1,
            version=base.version + 1,
        )

    def _reset_result(
        self, m: Measurement, new: UserState, reset_type: ResetType, outcome: ResetOutcome
    ) -> Result:
        return self._result(
            m,
            Verdict.ACCEPTED,
            Reason.OK,
            "",
            new.kalman,
            None,
            None,
            reset_type=reset_type,
            reset_outcome=outcome,
        )

    def _fallback(
        self,
        state: UserState | None,
        base: UserState,
        m: Measurement,
        decision: ResetDecision,
        txn: ResetTransaction,
        sink: Batch,
    ) -> Result:
        """Last-known-good state, else the recovery service; the reading always gets a result."""
        attempts: list[RecoveryAttempt] = []
        recovered: RecoveredState | None = None
        good = sink.last_good(m.user_id)
        if (
            good is not None
            and good.kalman is not None
            and not self.validator.user_state_problems(good)
        ):
            recovered = RecoveredState(
                good.kalman, good.adaptation, ResetOutcome.FALLBACK_LAST_GOOD
            )
        else:
            recovered, attempts = self.recovery.recover(m.user_id, m, base)
        if recovered.outcome is ResetOutcome.FALLBACK_LAST_GOOD and good is not None:
            fallback_base = replace(good, version=base.version, user_id=base.user_id)
            result = self._filter_fallback(fallback_base, base, m, sink, recovered.outcome)
        else:
            result = self._adopt(base, m, recovered, decision, sink)
        audit = txn.audit(fallback=recovered.outcome)
        sink.add_records(audits=[audit], recoveries=attempts)
        sink.after_commit(self.observer.reset_finished, audit)
        for attempt in attempts:
            sink.after_commit(self.observer.recovery_attempted, attempt)
        sink.flush_direct()
        return result

    def _filter_fallback(
        self, good: UserState, base: UserState, m: Measurement, sink: Batch, how: ResetOutcome
    ) -> Result:
        k = good.kalman
        assert k is not None
        q_w, q_t = self.manager.process_noise(good.adaptation)
        dt = max(0.0, (m.timestamp - k.timestamp).total_seconds() / _DAY)
        predicted = kalman.predict((k.x[0], k.x[1]), _mat(k.P), dt, q_w, q_t)
        staged = sink.mark()
        result = self._filter(good, m, sink, predicted)
        result = replace(result, reset_type=None, reset_outcome=how)
        sink.replace_result(staged, result)
        return result

    def _adopt(
        self,
        base: UserState,
        m: Measurement,
        recovered: RecoveredState,
        decision: ResetDecision,
        sink: Batch,
    ) -> Result:
        """Take a recovered state as the user's state at this reading."""
        new = replace(
            base,
            kalman=recovered.kalman,
            adaptation=recovered.adaptation,
            buffer=self.manager.push(
                () if decision.reset_type is not ResetType.SOFT else base.buffer, _entry(m)
            ),
            rejected=(),
            last_accepted_at=m.timestamp,
            last_event_at=_later(base.last_event_at, m.timestamp),
            last_reset_at=m.timestamp,
            last_reset_type=decision.reset_type,
            accepted_count=base.accepted_count + 1,
            version=base.version + 1,
        )
        problems = self.validator.problems(
            persist_snapshot(base if base.version else None, new), ResetOperation.STATE_PERSIST
        )
        if problems:
            result = replace(
                self._result(
                    m,
                    Verdict.REJECTED,
                    Reason.RESET_FAILED,
                    "reset failed and no valid fallback state",
                    base.kalman,
                    None,
                ),
                reset_type=decision.reset_type,
                reset_outcome=ResetOutcome.FAILED,
            )
            kept = replace(
                base,
                last_event_at=_later(base.last_event_at, m.timestamp),
                version=base.version + 1,
            )
            sink.stage(kept if not self.validator.user_state_problems(kept) else None, m, result)
            return result
        result = self._reset_result(m, new, decision.reset_type, recovered.outcome)
        sink.stage(new, m, result, last_good=True)
        return result

    # -- results --------------------------------------------------------------------------

    def _result(
        self,
        m: Measurement,
        verdict: Verdict,
        reason: str,
        message: str,
        k: KalmanState | None,
        ctx: RuleContext | None,
        row: int | None = None,
        *,
        reset_type: ResetType | None = None,
        reset_outcome: ResetOutcome | None = None,
    ) -> Result:
        components = self._quality(m, ctx)
        quality = 0.6 * components[0][1] + 0.25 * components[1][1] + 0.15 * components[2][1]
        return Result(
            reading_id=m.reading_id,
            user_id=m.user_id,
            verdict=verdict,
            reason=str(reason),
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
            row=row,
        )

    def _quality(self, m: Measurement, ctx: RuleContext | None) -> tuple[tuple[str, float], ...]:
        """Descriptive quality in [0, 1]: how well the reading fits (not used to decide)."""
        source = min(1.0, 1.0 / self.config.sources.multiplier(m.source))
        if ctx is None:
            return (("innovation", 1.0), ("rate", 1.0), ("source", source))
        innovation = math.exp(-0.5 * ctx.innovation * ctx.innovation / ctx.innovation_var)
        rate = 1.0
        if ctx.last_accepted_kg is not None:
            cfg = ctx.config
            allowed = cfg.rate_slack_kg + cfg.max_rate_kg_per_day * ctx.days_since_accepted
            rate = max(0.0, 1.0 - abs(ctx.weight_kg - ctx.last_accepted_kg) / allowed)
        return (("innovation", innovation), ("rate", rate), ("source", source))


class Batch:
    """One unit of work over many readings (group commit), or one reading (``direct``).

    Staged states live in an overlay until :meth:`commit`; if the commit fails nothing of the
    batch is kept, in the store or in the processor's cache.
    """

    def __init__(self, processor: Processor, input_id: str | None, *, direct: bool = False):
        self.p = processor
        self.input_id = input_id
        self.direct = direct
        self.unit = UnitOfWork()
        self.overlay: dict[str, UserState] = {}
        self.staged_keys: set[str] = set()
        self.known_keys: set[str] = set()
        self._prefetched = False
        self._undo_states: list[
            tuple[str, UserState | None, tuple[UserState, datetime] | None]
        ] = []
        self._row: int | None = None
        self.pending_events: list[tuple[Callable[[Any], None], object]] = []

    @property
    def row(self) -> int | None:
        """The input row of the reading being processed (None for library calls)."""
        return self._row

    def add_records(self, audits: list[ResetAudit], recoveries: list[RecoveryAttempt]) -> None:
        """Stage audit and recovery records that belong to this unit."""
        self.unit.audits.extend(audits)
        self.unit.recoveries.extend(recoveries)

    def after_commit(self, hook: Callable[[Any], None], value: object) -> None:
        """Call ``hook(value)`` once this unit is durable (observers see only what is stored)."""
        self.pending_events.append((hook, value))

    # -- reading ------------------------------------------------------------------------------

    def prefetch(self, readings: Iterable[Measurement]) -> None:
        """Look up, in one go, which keys are stored and the states of these users."""
        readings = list(readings)
        keys = [m.reading_id for m in readings] + [m.content_key for m in readings]
        self.known_keys = self.p.store.existing_keys(keys)
        missing = {m.user_id for m in readings} - set(self.p._cache) - set(self.overlay)
        if missing:
            for uid, state in self.p.store.load_states(missing).items():
                self.p._cache[uid] = self.p._checked(state)
        self._prefetched = True

    def current(self, user_id: str) -> UserState | None:
        if user_id in self.overlay:
            return self.overlay[user_id]
        return self.p.load_state(user_id)

    def last_good(self, user_id: str) -> UserState | None:
        current = self.current(user_id)
        if current is not None and current.kalman is not None:
            return current
        stored = self.p.store.last_good(user_id)
        return stored[0] if stored else None

    # -- processing ---------------------------------------------------------------------------

    def process(self, m: Measurement, *, row: int | None = None) -> Result:
        started = time.perf_counter()
        if not self._prefetched:
            self.known_keys = self.p.store.existing_keys([m.reading_id, m.content_key])
        self._row = row
        result = self._decide(m)
        self.pending_events.append(
            (_reading_hook(self.p.observer, time.perf_counter() - started), result)
        )
        if self.direct:
            self.commit()
        return result

    def _decide(self, m: Measurement) -> Result:
        dup = self._duplicate(m)
        if dup is not None:
            self.unit.results.append((self.input_id, dup))  # process() reports it, once
            return dup
        state = self.current(m.user_id)
        if (
            state is not None
            and state.last_event_at is not None
            and m.timestamp < state.last_event_at
        ):
            late = self._late(m, state)
            if late is not None:
                return late
        return self.p._step(state, m, self)

    def _duplicate(self, m: Measurement) -> Result | None:
        key_seen = m.reading_id in self.staged_keys or m.reading_id in self.known_keys
        content = m.content_key
        if not key_seen and content not in self.staged_keys and content not in self.known_keys:
            return None
        reason = Reason.DUPLICATE_KEY if key_seen else Reason.DUPLICATE_CONTENT
        return Result(
            reading_id=m.reading_id,
            user_id=m.user_id,
            verdict=Verdict.DUPLICATE,
            reason=reason,
            message="already processed",
            row=self._row,
            timestamp=m.timestamp,
            source=m.source,
            weight_kg=m.weight_kg,
        )

    def _late(self, m: Measurement, state: UserState) -> Result | None:
        if self.p.config.processing.late_policy == "reject_late":
            result = Result(
                reading_id=m.reading_id,
                user_id=m.user_id,
                verdict=Verdict.LATE,
                reason=Reason.LATE_READING,
                message="older than the user's last reading",
                row=self._row,
                timestamp=m.timestamp,
                source=m.source,
                weight_kg=m.weight_kg,
            )
            self.stage(None, m, result, audits=[], last_good=False)
            return result
        from weightstream.replay import replay_late

        return replay_late(self, m, state)

    def add_result(self, result: Result) -> None:
        """Record a result that changes no state (duplicate, invalid row)."""
        if self._row is not None and result.row is None:
            result = replace(result, row=self._row)
        self.unit.results.append((self.input_id, result))
        self.pending_events.append((_reading_hook(self.p.observer, 0.0), result))
        if self.direct:
            self.commit()

    # -- staging ------------------------------------------------------------------------------

    def mark(self) -> tuple[int, int, int]:
        u = self.unit
        return (len(u.readings), len(u.results), len(u.audits))

    def stage(
        self,
        state: UserState | None,
        m: Measurement,
        result: Result,
        *,
        audits: list[ResetAudit] | None = None,
        last_good: bool = False,
    ) -> tuple[int, int, int]:
        mark = self.mark()
        if self._row is not None and result.row != self._row:
            result = replace(result, row=self._row)
        self.unit.readings.append((m, result))
        self.unit.results.append((self.input_id, result))
        self.unit.audits.extend(audits or ())
        self.staged_keys.add(m.reading_id)
        self.staged_keys.add(m.content_key)
        if state is not None:
            previous = self.overlay.get(state.user_id)
            self._undo_states.append(
                (state.user_id, previous, self.unit.last_good.get(state.user_id))
            )
            stored = self.p.load_state(state.user_id) if previous is None else None
            expected = stored.version if stored is not None else 0
            if previous is None:
                self.unit.expected_versions[state.user_id] = expected
            self.unit.states[state.user_id] = state
            self.overlay[state.user_id] = state
            if last_good:
                self.unit.last_good[state.user_id] = (state, self.p.clock.now())
        return mark

    def unstage(self, mark: tuple[int, int, int]) -> None:
        readings, results, audits = mark
        for m, _ in self.unit.readings[readings:]:
            self.staged_keys.discard(m.reading_id)
            self.staged_keys.discard(m.content_key)
        del self.unit.readings[readings:]
        del self.unit.results[results:]
        del self.unit.audits[audits:]
        if self._undo_states:
            uid, previous, good = self._undo_states.pop()
            if previous is None:
                self.overlay.pop(uid, None)
                self.unit.states.pop(uid, None)
                self.unit.expected_versions.pop(uid, None)
            else:
                self.overlay[uid] = previous
                self.unit.states[uid] = previous
            if good is None:
                self.unit.last_good.pop(uid, None)
            else:
                self.unit.last_good[uid] = good

    def restate(self, index: int, result: Result) -> None:
        """Re-issue the result of staged reading ``index`` (a late reading changed it)."""
        m, old = self.unit.readings[index]
        result = replace(result, row=old.row)
        self.unit.readings[index] = (m, result)
        for i, (input_id, staged) in enumerate(self.unit.results):
            if staged is old:
                self.unit.results[i] = (input_id, result)
                break

    def replace_result(self, mark: tuple[int, int, int], result: Result) -> None:
        readings, results, _ = mark
        if self._row is not None:
            result = replace(result, row=self._row)
        if len(self.unit.readings) > readings:
            m, _ = self.unit.readings[readings]
            self.unit.readings[readings] = (m, result)
        if len(self.unit.results) > results:
            self.unit.results[results] = (self.input_id, result)

    # -- committing -----------------------------------------------------------------------------

    def flush_direct(self) -> None:
        if self.direct:
            self.commit()

    def commit(self, position: tuple[str, int] | None = None) -> None:
        """Write the unit in one store transaction; on failure nothing of it is kept."""
        if position is not None:
            self.unit.position = position
        unit, events = self.unit, self.pending_events
        try:
            self.p.store.commit(unit)
        except BaseException:
            self.p.forget(unit.states)
            self._reset_unit()
            raise
        self.p._cache.update(unit.states)
        self._reset_unit()
        for hook, value in events:  # observers see only what is durable
            hook(value)

    def _reset_unit(self) -> None:
        self.unit = UnitOfWork()
        self.overlay.clear()
        self._undo_states.clear()
        self.staged_keys.clear()
        self.pending_events = []


def _reading_hook(observer: Observer, duration: float) -> Callable[[Any], None]:
    return lambda result: observer.reading_processed(result, duration)


def _committed_audit(txn: ResetTransaction) -> ResetAudit:
    return txn.audit(outcome="committed")


def _entry(m: Measurement) -> BufferedReading:
    return BufferedReading(m.timestamp, m.weight_kg, m.source)


def _later(a: datetime | None, b: datetime) -> datetime:
    return b if a is None or b > a else a


def _mat(P: tuple[tuple[float, ...], ...]) -> kalman.Mat:
    return ((P[0][0], P[0][1]), (P[1][0], P[1][1]))
