"""A stored user state that does not decode or validate: detected per user, repaired per user.

Detection
---------
Every store decodes each state row on its own (:func:`weightstream.store.codec.row_to_state`)
and turns any failure to decode into :class:`~weightstream.errors.StateCorruptionError` for
that user: a buffer that is not JSON, an unknown reset type, a text in a numeric column, a time
past the datetime range, a negative count, a version below 1. :func:`load_checked` adds the
validator's checks (NaN or NULL where a number must be, P not positive definite, ...) and raises
the same error. Nothing here writes: this is the read path (``Processor.estimate``,
``weightstream state``), which reports a corrupt user and leaves it as it is.

Repair (the write path only)
----------------------------
:func:`repair_user` is what ``process_one`` and a file's batches do when a user they are about
to change is corrupt. In ONE store transaction it:

* rebuilds the user from its stored history (:func:`weightstream.replay.rebuild_user`, the same
  replay as live processing), re-issuing history results the replay decides differently; or,
  when the user has no history (or the replay gives no valid state), **quarantines** it: the
  row is replaced by an empty state, so the user starts fresh (its next reading is an initial
  reset) instead of failing on every later load. Nothing could be rebuilt from, and a state
  cannot be trusted without its readings;
* records a :class:`~weightstream.model.RecoveryAttempt` (strategy ``state_rebuilt`` or
  ``state_quarantined``; ``succeeded`` False for a quarantine) whose detail is the error's
  message: the field and what was wrong with it, never a value;
* replaces the row only while its ``version`` column still holds exactly what was read
  (compare-and-swap on the raw value, which may itself be the corrupt part); another writer
  that repaired it first makes this unit a :class:`~weightstream.errors.ConflictError`, which
  the caller redoes from the fresh, now valid, state.

The corrupt content is overwritten, not kept: it holds weights, and the record says what was
wrong. Every other user is untouched, and so is this user's history of readings.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from weightstream.clock import SYSTEM_CLOCK, Clock
from weightstream.config import Config
from weightstream.errors import StateCorruptionError
from weightstream.model import RecoveryAttempt, UserState
from weightstream.replay import Rebuild, apply_rebuild, rebuild_user
from weightstream.resets.validator import StateValidator
from weightstream.store.base import StateStore, UnitOfWork
from weightstream.store.strict import MAX_VERSION

__all__ = ["load_checked", "check_state", "repair_user", "REBUILT", "QUARANTINED"]

#: Recovery-attempt strategies recorded by :func:`repair_user`.
REBUILT = "state_rebuilt"
QUARANTINED = "state_quarantined"

_log = logging.getLogger(__name__)


def check_state(state: UserState, validator: StateValidator) -> None:
    """Raise :class:`StateCorruptionError` if a loaded ``state`` fails validation."""
    problems = validator.user_state_problems(state)
    if problems:
        raise StateCorruptionError(
            f"stored state fails validation: {'; '.join(problems)}",
            user_id=state.user_id,
            operation="load_state",
            stored_version=state.version,
        )


def load_checked(store: StateStore, user_id: str, validator: StateValidator) -> UserState | None:
    """The stored state of ``user_id``, decoded and validated; None for an unknown user.

    Reads only. A row that does not decode or validate raises :class:`StateCorruptionError`.
    """
    state = store.load_state(user_id)
    if state is not None:
        check_state(state, validator)
    return state


def repair_user(
    store: StateStore,
    user_id: str,
    config: Config,
    error: StateCorruptionError,
    *,
    validator: StateValidator,
    clock: Clock = SYSTEM_CLOCK,
    reading_id: str = "",
) -> UserState:
    """Rebuild (or quarantine) corrupt ``user_id`` in one commit; the valid state now stored.

    ``error`` is what loading the user raised; its ``stored_version`` guards the replacement.
    ``reading_id`` names the reading that needed the user, if any, in the recovery record.
    """
    rebuild = rebuild_user(store, user_id, config)
    rebuilt = rebuild.rebuilt
    if rebuilt is not None and validator.user_state_problems(rebuilt):
        rebuilt = None  # a replay that gives no valid state is no better than no history
    base = rebuilt if rebuilt is not None else UserState(user_id=user_id)
    state = replace(base, version=_next_version(error.stored_version, base.version))
    unit = UnitOfWork(replaced_readings=list(rebuild.changed) if rebuilt is not None else [])
    unit.replace_corrupt(state, error.stored_version)
    strategy = REBUILT if rebuilt is not None else QUARANTINED
    unit.recoveries.append(
        RecoveryAttempt(
            user_id=user_id,
            reading_id=reading_id,
            strategy=strategy,
            succeeded=rebuilt is not None,
            detail=f"{error.message}; {rebuild.readings} stored readings replayed",
            at=clock.now(),
        )
    )
    store.commit(unit)
    _log.warning(
        "user %s: corrupt stored state %s (%s)",
        user_id,
        "rebuilt from history" if rebuilt is not None else "quarantined: starts fresh",
        error.message,
    )
    return state


def _next_version(stored: object, rebuilt: int) -> int:
    """A version above the stored one when that one is a usable integer; at least 1."""
    if type(stored) is int and 0 <= stored < MAX_VERSION:
        return max(rebuilt, stored + 1, 1)
    return max(rebuilt, 1)


def store_rebuild(
    store: StateStore,
    user_id: str,
    config: Config,
    rebuild: Rebuild,
    *,
    validator: StateValidator,
    clock: Clock = SYSTEM_CLOCK,
) -> UserState | None:
    """Store ``rebuild`` as the user's state (``recover --apply``, the service's recover).

    A live row that does not decode (or fails validation) is replaced as a repair
    (:func:`repair_user`, guarded by its raw version); any other by the rebuilt state, from
    the version it was rebuilt against. Returns the state now stored.
    """
    try:
        load_checked(store, user_id, validator)
    except StateCorruptionError as exc:
        return repair_user(store, user_id, config, exc, validator=validator, clock=clock)
    return apply_rebuild(store, rebuild)
