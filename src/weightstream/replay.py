"""Replaying a user's stored history: late readings, rebuilds and self-healing.

One function, :func:`replay`, runs readings through the pure step
(:func:`weightstream.step.step`) from an empty state, in processing order
(:func:`~weightstream.model.order_key`: event time, then content). Everything that rebuilds
state uses it, and live processing runs the same step, so a rebuild and live processing agree
bit for bit (invariant I7):

* :func:`replay_late`: a reading that sorts before the user's last one (a later file, or the
  same instant with content that sorts earlier) is inserted where it belongs and the user's
  later readings are re-decided; results then equal what sorted input gives (invariant I14).
  Re-issued results update the stored readings' history (the rows of earlier input files
  keep what they said then).
* :func:`rebuild_user`: ``weightstream recover USER``; and automatically for a user whose
  stored state row fails validation on load.

A reset inside a replay runs the same sequence (:func:`~weightstream.resets.sequence.run_reset`)
in a :class:`~weightstream.resets.transaction.ResetTransaction`, with chaos off (the
policy's crash points kept, :meth:`~weightstream.faults.FaultPoints.without_chaos`) and no
circuit breaker (a replay is not a live attempt that can be retried later). If a replayed
reset fails validation, the replay falls back to its own last-known-good state, else to the
conservative state; it does not query the store's history as the live recovery service does.

Readings marked ``late`` (policy ``reject_late``) are kept but never replayed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from weightstream.config import Config
from weightstream.errors import ResetError, StateCorruptionError
from weightstream.faults import FaultPoints
from weightstream.model import (
    Measurement,
    Result,
    UserState,
    Verdict,
    order_key,
)
from weightstream.resets.recovery import RecoveredState
from weightstream.resets.sequence import checks_for, run_reset
from weightstream.resets.transaction import ResetTransaction
from weightstream.step import Policy, ResetPlan, Step, adopt, from_last_good, step
from weightstream.store.base import StateStore, UnitOfWork

if TYPE_CHECKING:
    from weightstream.batch import Batch

__all__ = ["replay", "rebuild_user", "replay_late", "Rebuild", "apply_rebuild"]


def replay(
    readings: list[Measurement], config: Config, *, policy: Policy | None = None
) -> tuple[UserState | None, list[Result]]:
    """Decide ``readings`` (already in processing order) from an empty state.

    Returns the final state and one result per reading.
    """
    policy = policy or Policy(config)
    faults = policy.faults.without_chaos()
    state: UserState | None = None
    last_good: UserState | None = None
    results: list[Result] = []
    for m in readings:
        s = step(state, m, policy)
        if s.reset is not None:
            s = _reset(s.reset, m, policy, last_good, faults)
        if s.state is not None:
            state = s.state
            if s.last_good:
                last_good = s.state
        assert s.result is not None
        results.append(s.result)
    return state, results


def _reset(
    plan: ResetPlan,
    m: Measurement,
    policy: Policy,
    good: UserState | None,
    faults: FaultPoints,
) -> Step:
    txn = ResetTransaction(
        m.user_id,
        reading_id=m.reading_id,
        reset_type=plan.decision.reset_type,
        trigger=plan.decision.trigger,
        validator=policy.validator,
        checked=policy.config.resets.transactional,
    )
    check = checks_for(txn, policy.config.resets.transactional)
    try:
        with txn:
            new, result = run_reset(plan, m, policy, check, faults)
        return Step(new, result, last_good=True)
    except ResetError:
        pass
    if good is not None and not policy.validator.user_state_problems(good):
        return from_last_good(good, plan.base, m, policy)
    conservative = _conservative(m, policy)
    return adopt(plan.base, m, conservative, plan.decision.reset_type, policy)


def _conservative(m: Measurement, policy: Policy) -> RecoveredState:
    from weightstream.resets.recovery import ResetRecoveryService
    from weightstream.store.memory import MemoryStore

    return ResetRecoveryService(MemoryStore(), policy.manager).conservative(m)


@dataclass(frozen=True)
class Rebuild:
    """A user's state rebuilt from history, and how it differs from the stored one."""

    user_id: str
    rebuilt: UserState | None
    live: UserState | None
    readings: int
    changed: list[tuple[Measurement, Result]]

    @property
    def equal(self) -> bool:
        return self.rebuilt == self.live

    def differences(self) -> list[str]:
        """Field-by-field differences between live and rebuilt (names only, no weights)."""
        if self.rebuilt is None or self.live is None:
            return [] if self.rebuilt is self.live else ["state present on one side only"]
        out = []
        for name in self.rebuilt.__dataclass_fields__:
            if name == "version":  # a write counter, bumped by apply_rebuild; not from history
                continue
            if getattr(self.rebuilt, name) != getattr(self.live, name):
                out.append(name)
        return out


def rebuild_user(store: StateStore, user_id: str, config: Config) -> Rebuild:
    """Replay every stored reading of ``user_id``; compare with the live state. Writes nothing."""
    rows = [r for r in store.history(user_id) if r.result.verdict is not Verdict.LATE]
    if config.processing.late_policy == "replay":
        # Same-instant readings in content order, as live processing replays them; under
        # ``reject_late`` they were taken in arrival order, which is the history's own order.
        rows.sort(key=lambda r: (order_key(r.measurement), r.seq))
    rebuilt, results = replay([r.measurement for r in rows], config)
    changed = [
        (row.measurement, new)
        for row, new in zip(rows, results, strict=True)
        if _decision(row.result) != _decision(new)
    ]
    try:
        live = store.load_state(user_id)
    except StateCorruptionError:
        live = None  # a row that does not decode; weightstream.repair replaces it
    return Rebuild(user_id, rebuilt, live, len(rows), changed)


def apply_rebuild(store: StateStore, rebuild: Rebuild) -> UserState | None:
    """Replace the stored state by the rebuilt one (one transaction). Returns what was stored."""
    if rebuild.rebuilt is None:
        return None
    live_version = rebuild.live.version if rebuild.live else 0
    state = replace(rebuild.rebuilt, version=max(rebuild.rebuilt.version, live_version + 1))
    unit = UnitOfWork(replaced_readings=list(rebuild.changed))
    unit.put_state(state, live_version)
    store.commit(unit)
    return state


def replay_late(batch: Batch, m: Measurement, state: UserState) -> Result:
    """Insert late reading ``m`` into its user's history and re-decide what follows it."""
    user = m.user_id
    stored = [
        (order_key(r.measurement), 0, r.seq, r.measurement, r.result)
        for r in batch.p.store.history(user)
        if r.result.verdict is not Verdict.LATE
    ]
    staged = [
        (order_key(sm), 1, i, sm, sr)
        for i, (sm, sr) in enumerate(batch.unit.readings)
        if sm.user_id == user and sr.verdict is not Verdict.LATE
    ]
    ordered = sorted([*stored, *staged, (order_key(m), 2, 0, m, None)], key=lambda t: t[:3])
    final, results = replay([t[3] for t in ordered], batch.p.config, policy=batch.p.policy)
    assert final is not None
    mine: Result | None = None
    for (_, group, index, old_m, old_r), new_r in zip(ordered, results, strict=True):
        if group == 2:
            mine = new_r
        elif group == 0 and old_r is not None and _decision(old_r) != _decision(new_r):
            batch.unit.replaced_readings.append((old_m, new_r))
        elif group == 1 and old_r is not None and _decision(old_r) != _decision(new_r):
            batch.restate(index, new_r)
    assert mine is not None
    final = replace(final, version=state.version + 1)
    batch.stage(final, m, mine, last_good=True)
    return mine


def _decision(r: Result) -> tuple[object, ...]:
    return (r.verdict, r.reason, r.filtered_weight, r.trend_kg_week, r.std_kg, r.reset_type)
