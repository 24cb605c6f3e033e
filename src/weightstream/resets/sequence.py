"""The reset sequence, written once.

Kalman reset, then adaptation, then the buffer, then the whole new state: each operation
computes a new frozen value from the last, and ``check`` is called after each with a thunk of
its checkpoint. Under the plan's feature flag (``resets.transactional``) that is the only
difference: the transactional shell passes
:meth:`~weightstream.resets.transaction.ResetTransaction.check`, which validates the
checkpoint and raises on a failure; the plain shell passes :func:`unchecked`, which builds
nothing. Nothing here writes: the caller stages the returned state and result and commits them
in one store transaction.

Crash points and chaos (a :class:`~weightstream.faults.FaultPoints`, the policy's by default)
mark each operation so that the crash matrix and the chaos tests can fail a reset at every
step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from weightstream.faults import FaultPoints
from weightstream.model import (
    AdaptationState,
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
from weightstream.resets import triggers
from weightstream.resets.transaction import ResetTransaction
from weightstream.resets.validator import (
    ResetOperation,
    adaptation_snapshot,
    buffer_snapshot,
    kalman_snapshot,
    persist_snapshot,
)
from weightstream.step import Policy, ResetPlan, make_result

__all__ = ["Check", "run_reset", "reset_state", "unchecked", "checks_for"]


class Check(Protocol):
    """``check(operation, snapshot, *args)``: validate ``snapshot(*args)``, what ``operation``
    produced (or do nothing). The sequence passes the snapshot function and its arguments, so
    an unchecked sequence builds nothing and a checked one makes no closure per step."""

    def __call__(
        self, operation: ResetOperation, snapshot: Callable[..., Any], /, *args: Any
    ) -> None: ...


def unchecked(operation: ResetOperation, snapshot: Callable[..., Any], /, *args: Any) -> None:
    """The plain sequence's check: none (the flag ``resets.transactional = false``)."""


def reset_state(
    base: UserState,
    m: Measurement,
    k: KalmanState,
    adaptation: AdaptationState,
    buffer: tuple[BufferedReading, ...],
    reset_type: ResetType,
) -> UserState:
    """The user's whole state after a reset at reading ``m``, from the operations' results."""
    last_event = base.last_event_at
    return UserState(
        user_id=base.user_id,
        kalman=k,
        adaptation=adaptation,
        buffer=buffer,
        rejected=(),
        last_accepted_at=m.timestamp,
        last_event_at=m.timestamp if last_event is None or m.timestamp > last_event else last_event,
        last_reset_at=m.timestamp,
        last_reset_type=reset_type,
        accepted_count=base.accepted_count + 1,
        version=base.version + 1,
    )


def checks_for(txn: ResetTransaction, transactional: bool) -> Check:
    """The check a shell passes: ``txn``'s validation, or none under the feature flag."""
    return txn.check if transactional else unchecked


def run_reset(
    plan: ResetPlan,
    m: Measurement,
    policy: Policy,
    check: Check,
    faults: FaultPoints | None = None,
) -> tuple[UserState, Result]:
    """Run the reset of ``plan`` for reading ``m``.

    ``faults`` (``policy.faults`` unless given) marks each operation with a crash point and
    chaos. Returns the user's whole new state and the reading's result (outcome
    ``committed``).
    """
    if faults is None:
        faults = policy.faults
    manager = policy.manager
    base = plan.base
    reset_type = plan.decision.reset_type
    checked = check is not unchecked  # the plain sequence skips the snapshots altogether
    armed = not faults.inert  # an inert FaultPoints: six calls a reset saved
    if armed:
        faults.crash_point("reset.kalman")
        faults.chaos("reset")
    k = manager.apply_reset(base.kalman, reset_type, m)
    if checked:
        check(
            ResetOperation.KALMAN_RESET,
            kalman_snapshot,
            k,
            manager.reset_noise(reset_type),
            manager.measurement_var(m.source),
        )
    if armed:
        faults.crash_point("reset.adaptation")
    adaptation = manager.create_adaptation_state(reset_type, m.timestamp)
    if checked:
        check(ResetOperation.ADAPTATION_CREATE, adaptation_snapshot, adaptation, m.timestamp)
    if armed:
        faults.crash_point("reset.buffer")
    buffer = manager.buffer_after_reset(base.buffer, reset_type, m)
    if plan.decision.trigger == triggers.STREAK_TRIGGER:
        # A takeover's baseline is provisional: it remembers the level it displaced.
        buffer = triggers.keep_displaced(base, buffer, policy.config.resets.buffer_size)
    if checked:
        check(
            ResetOperation.BUFFER_UPDATE,
            buffer_snapshot,
            buffer,
            policy.config.resets.buffer_size,
        )
    new = reset_state(base, m, k, adaptation, buffer, reset_type)
    if checked:
        check(
            ResetOperation.STATE_PERSIST,
            persist_snapshot,
            base if base.version else None,
            new,
            (k, adaptation, buffer),  # passed by the checks above (each raises on a failure)
        )
    if armed:
        faults.crash_point("reset.persist")
        faults.chaos("persist")
    result = make_result(
        policy,
        m,
        Verdict.ACCEPTED,
        Reason.OK,
        "",
        new.kalman,
        None,
        reset_type=reset_type,
        reset_outcome=ResetOutcome.COMMITTED,
    )
    return new, result
