"""The orchestration shell: one reading in, one result out, state committed once.

``Processor.process_one(m)`` changes state and commits it (state, the reading, its result,
any reset audit and recovery attempts in ONE store transaction); ``Processor.estimate(user)``
only reads. Every decision about a reading is the pure :func:`weightstream.step.step`; this
shell adds only what outlives one reading:

* the store and a cache of committed states (:class:`~weightstream.batch.Batch` stages a
  unit of work and commits it; ``process_one`` is a batch of one);
* a reset the step decided on runs the one reset sequence
  (:func:`~weightstream.resets.sequence.run_reset`) in a
  :class:`~weightstream.resets.transaction.ResetTransaction` through the circuit breaker. A
  failure rolls back, counts against the breaker, and the reading is processed on the
  fallback chain (last-known-good state, then the recovery service), never dropped. A storage
  error is the store's failure, not the reset's: it leaves as itself, on both sides of the
  ``resets.transactional`` flag, and never counts against the breaker;
* self-healing: a stored state that fails validation is rebuilt from history on the write
  path (:meth:`Processor.load_state`), for that user alone.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from weightstream.batch import Batch
from weightstream.clock import SYSTEM_CLOCK, Clock
from weightstream.config import Config
from weightstream.errors import (
    CircuitOpenError,
    ConflictError,
    ResetError,
    StateCorruptionError,
    StorageError,
)
from weightstream.faults import NO_FAULTS, FaultPoints
from weightstream.ingest.rows import invalid_result, validate_reading
from weightstream.lifecycle import Phase, phase_of
from weightstream.model import AuditOutcome, Measurement, RecoveryAttempt, Result, UserState
from weightstream.observe import Observer
from weightstream.repair import check_state, load_checked, repair_user
from weightstream.resets.breaker import CircuitBreaker
from weightstream.resets.manager import ResetManager
from weightstream.resets.recovery import ResetRecoveryService
from weightstream.resets.sequence import checks_for, run_reset
from weightstream.resets.transaction import ResetTransaction
from weightstream.resets.validator import ResetOperation, StateValidator
from weightstream.step import Policy, ResetPlan, Step, adopt, from_last_good, step
from weightstream.store.base import StateStore

__all__ = ["Processor", "Batch", "Estimate"]

_RETRIES = 3
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
        faults: FaultPoints = NO_FAULTS,
    ) -> None:
        self.store = store
        self.config = config or Config()
        self.clock = clock
        self.observer = observer or Observer()
        self.policy = Policy(self.config, manager=manager, validator=validator, faults=faults)
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
        self._cache: dict[str, UserState] = {}
        self._absent: set[str] = set()  # users known to have no stored state

    @property
    def manager(self) -> ResetManager:
        """The reset manager the step uses (replaceable, e.g. by a fault-injecting one)."""
        return self.policy.manager

    @manager.setter
    def manager(self, manager: ResetManager) -> None:
        self.policy.manager = manager

    @property
    def validator(self) -> StateValidator:
        return self.policy.validator

    @validator.setter
    def validator(self, validator: StateValidator) -> None:
        self.policy.validator = validator

    @property
    def faults(self) -> FaultPoints:
        """Crash points and chaos of this processor's resets (replaceable, as in tests)."""
        return self.policy.faults

    @faults.setter
    def faults(self, faults: FaultPoints) -> None:
        self.policy.faults = faults

    # -- public verbs -----------------------------------------------------------------------

    def process_one(self, m: Measurement, *, row: int | None = None) -> Result:
        """Process one reading and commit its effects. Returns its result.

        A unit that met another writer (:class:`ConflictError`) was not stored at all, so it is
        redone from fresh state, up to ``_RETRIES`` times; a reading that the other writer
        stored meanwhile then comes back as ``duplicate``. A lock held past the busy timeout
        (:class:`StoreBusyError`) and other storage errors reach the caller unretried.

        The reading is first held to the rules of a CSV row
        (:func:`weightstream.ingest.validate_reading`): an invalid one returns an ``invalid``
        result with the same reason a file would give, stores nothing and never raises.
        """
        checked = validate_reading(m, config=self.config, now=self.clock.now())
        if not isinstance(checked, Measurement):
            result = invalid_result(m, checked, row=row)
            self.observer.reading_processed(result, 0.0)
            return result
        m = checked
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
        """The user's current filtered weight, trend and uncertainty. Changes nothing.

        A corrupt stored state raises :class:`StateCorruptionError`; it is repaired only on
        the write path (a reading processed for the user), never here.
        """
        state = self._cache.get(user_id) or load_checked(self.store, user_id, self.validator)
        if state is None or phase_of(state) is Phase.NEW:
            return None
        k = state.kalman
        assert k is not None  # a user past NEW has a filter
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

    # -- committed states ---------------------------------------------------------------------

    def load_state(self, user_id: str) -> UserState | None:
        """The committed state (cached), validated; a corrupt one is repaired first.

        The write path's load: a row that does not decode or validate is rebuilt from history
        or quarantined (:func:`weightstream.repair.repair_user`, its own commit), for that
        user alone.
        """
        state = self._cache.get(user_id)
        if state is None and user_id not in self._absent:
            try:
                state = load_checked(self.store, user_id, self.validator)
            except StateCorruptionError as exc:
                state = self._repair(user_id, exc)
            if state is not None:
                self._cache[user_id] = state
        return state

    def preload(self, user_ids: Iterable[str]) -> None:
        """Load the committed states of several users in a few store queries.

        Users with no stored state at all are remembered as such, so that a file of new
        users costs no query per user (a row that does not decode is not "no state": it is
        loaded, and repaired, by :meth:`load_state`).
        """
        missing = [uid for uid in user_ids if uid not in self._cache and uid not in self._absent]
        if missing:
            for uid, state in self.store.load_states(missing).items():
                self._cache[uid] = self._checked(state)
            unknown = [uid for uid in missing if uid not in self._cache]
            if unknown:
                self._absent.update(set(unknown) - self.store.known_users(unknown))

    def remember(self, states: dict[str, UserState]) -> None:
        """Cache states that were just committed."""
        self._cache.update(states)
        self._absent.difference_update(states)

    def refresh(self, user_ids: Iterable[str]) -> None:
        """Drop what is cached of ``user_ids`` that is no longer what the store holds (another
        process committed since): one query for the stored versions; no state is loaded."""
        ids = [u for u in user_ids if u in self._cache or u in self._absent]
        if not ids:
            return
        stored = self.store.state_versions(ids)
        for uid in ids:
            cached = self._cache.get(uid)
            if cached is None:
                if uid in stored:
                    self._absent.discard(uid)
            elif stored.get(uid) != cached.version:
                del self._cache[uid]

    def forget_all_but(self, user_id: str) -> None:
        """Drop every cached state but ``user_id``'s (a file engine moving on through users)."""
        kept = self._cache.get(user_id)
        self._cache.clear()
        self._absent.clear()
        if kept is not None:
            self._cache[user_id] = kept

    def forget(self, user_ids: Iterable[str] | None = None) -> None:
        """Drop cached committed states (after a conflict, or to re-read the store)."""
        if user_ids is None:
            self._cache.clear()
            self._absent.clear()
        else:
            for uid in user_ids:
                self._cache.pop(uid, None)
                self._absent.discard(uid)

    def _checked(self, state: UserState) -> UserState:
        """``state`` if valid; else the user repaired (see :meth:`load_state`)."""
        try:
            check_state(state, self.validator)
            return state
        except StateCorruptionError as exc:
            return self._repair(state.user_id, exc)

    def _repair(self, user_id: str, exc: StateCorruptionError) -> UserState:
        state = repair_user(
            self.store, user_id, self.config, exc, validator=self.validator, clock=self.clock
        )
        self._cache[user_id] = state
        return state

    def check_loaded(self, state: UserState) -> None:
        """Raise :class:`StateCorruptionError` if a loaded ``state`` fails validation."""
        check_state(state, self.validator)

    # -- one reading ---------------------------------------------------------------------------

    def apply(self, state: UserState | None, m: Measurement, batch: Batch) -> Result:
        """Decide ``m`` (not a duplicate, not late) against ``state``; stage it into ``batch``."""
        s = step(state, m, self.policy)
        if s.reset is not None:
            return self._reset(s.reset, m, batch)
        assert s.result is not None
        batch.stage(s.state, m, s.result)
        return s.result

    def _reset(self, plan: ResetPlan, m: Measurement, batch: Batch) -> Result:
        decision = plan.decision
        txn = ResetTransaction(
            m.user_id,
            reading_id=m.reading_id,
            reset_type=decision.reset_type,
            trigger=decision.trigger,
            validator=self.validator,
            clock=self.clock,
            verify_restored=lambda: batch.current(m.user_id) == plan.prior,
            on_rollback_verified=lambda op, ok: batch.after_commit(  # only once durable
                lambda v: self.observer.rollback_verified(*v), (op, ok)
            ),
            checked=self.config.resets.transactional,
        )
        try:
            result: Result = self.breaker.call(self._run_reset, txn, plan, m, batch)
            return result
        except CircuitOpenError as exc:
            txn.failure_reason = str(exc)
            txn.outcome = AuditOutcome.BREAKER_OPEN
        except ResetError:
            pass  # rolled back and counted by the breaker: the fallback chain takes the reading
        return self._fallback(plan, m, txn, batch)

    def _run_reset(
        self, txn: ResetTransaction, plan: ResetPlan, m: Measurement, batch: Batch
    ) -> Result:
        with txn:
            new, result = run_reset(
                plan, m, self.policy, checks_for(txn, self.config.resets.transactional)
            )
            audit = txn.audit(outcome=AuditOutcome.COMMITTED)
            mark = batch.stage(new, m, result, audits=[audit], last_good=True)
            txn.add_undo(ResetOperation.STATE_PERSIST, lambda: batch.unstage(mark))
            batch.flush_direct()  # process_one: the one store transaction, inside the reset
            txn.mark_completed(ResetOperation.STATE_PERSIST)
        batch.after_commit(self.observer.reset_finished, audit)
        return result

    def _fallback(
        self, plan: ResetPlan, m: Measurement, txn: ResetTransaction, batch: Batch
    ) -> Result:
        """Last-known-good state, else the recovery service; the reading always gets a result."""
        attempts: list[RecoveryAttempt] = []
        good = batch.last_good(m.user_id)
        if (
            good is not None
            and phase_of(good) is not Phase.NEW
            and not self.validator.user_state_problems(good)
        ):
            s: Step = from_last_good(good, plan.base, m, self.policy)
            how = s.result.reset_outcome if s.result else None
        else:
            recovered, attempts = self.recovery.recover(m.user_id, m, plan.base)
            s = adopt(plan.base, m, recovered, plan.decision.reset_type, self.policy)
            how = recovered.outcome
        assert s.result is not None
        batch.stage(s.state, m, s.result, last_good=s.last_good)
        audit = txn.audit(fallback=how)
        batch.add_records(audits=[audit], recoveries=attempts)
        batch.after_commit(self.observer.reset_finished, audit)
        for attempt in attempts:
            batch.after_commit(self.observer.recovery_attempted, attempt)
        batch.flush_direct()
        return s.result
