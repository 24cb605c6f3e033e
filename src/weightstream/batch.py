"""A unit of work: many readings staged, then committed to the store in one transaction.

``Batch`` is where the processor stages what each reading does (the new state, the reading,
its result, reset audit records, last-known-good snapshots) until :meth:`Batch.commit` hands
the whole :class:`~weightstream.store.base.UnitOfWork` to the store. Staged states live in an
overlay, so later readings of the same user in the unit see them; if the commit fails nothing
of the unit is kept, in the store or in the processor's cache. ``process_one`` uses a batch of
one (``direct``), which commits as soon as the reading is decided.

Before a reading reaches the step, the batch settles the two cases that are not the step's
business: a duplicate (the same id, or the same content, stored or staged) and a late
reading (older than the user's last one: replayed into place, or marked ``late``).

It is also where a reading gets its offset (:meth:`weightstream.step.Policy.with_offset`),
once, before anything is decided: ``process_one`` and the file engine's readings decided one
by one come in here, and what is stored (the reading as given and its offset) replays as it
was decided.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import datetime
from itertools import repeat
from typing import TYPE_CHECKING, Any

from weightstream.model import (
    Measurement,
    Reason,
    RecoveryAttempt,
    ResetAudit,
    Result,
    UserState,
    Verdict,
    order_key,
)
from weightstream.observe import Observer
from weightstream.replay import replay_late
from weightstream.step import plain_result
from weightstream.store.base import UnitOfWork

if TYPE_CHECKING:
    from weightstream.processor import Processor

__all__ = ["Batch", "Mark"]

#: A reading's place in its user's processing order (:func:`order_key`).
OrderKey = tuple[int, str, str, float, str]

#: Where the unit stood before a staging: (readings, results, audits) counts.
Mark = tuple[int, int, int]


class Batch:
    """One unit of work over many readings (group commit), or one reading (``direct``)."""

    def __init__(self, processor: Processor, input_id: str | None, *, direct: bool = False):
        self.p = processor
        self.input_id = input_id
        self.direct = direct
        self.unit = UnitOfWork()
        self.overlay: dict[str, UserState] = {}
        # (user id, reading id or content key) of readings stored or staged; the keys of a
        # stretch of the file engine's readings wait in _pending_keys until asked for.
        self._staged_keys: set[tuple[str, str]] = set()
        self._pending_keys: list[tuple[str, list[str], list[str]]] = []
        self.known_keys: set[tuple[str, str]] = set()
        self._prefetched = False
        self._undo_states: list[
            tuple[str, UserState | None, tuple[UserState, datetime] | None]
        ] = []
        self._row: int | None = None
        self._last_keys: dict[str, OrderKey] = {}
        self.pending_events: list[tuple[Callable[[Any], None], object]] = []

    @property
    def staged_keys(self) -> set[tuple[str, str]]:
        """(user id, reading id or content key) of every reading staged in this unit."""
        if self._pending_keys:
            keys = self._staged_keys
            for user, ids, contents in self._pending_keys:
                keys.update(zip(repeat(user), ids))
                keys.update(zip(repeat(user), contents))
            self._pending_keys.clear()
        return self._staged_keys

    def stage_keys(self, user_id: str, ids: list[str], contents: list[str]) -> None:
        """Count readings of ``user_id`` (their ids and content keys) as staged.

        The file engine stages its stretches' readings as rows; their keys join
        :attr:`staged_keys` only if a duplicate check asks for them. A group judges its own
        readings' duplicates up front (``engine.group._duplicates``) and hands the step only
        readings it found new (``process(..., new=True)``), so a group without a
        late reading never builds them (some 400,000 tuples for 200,000 readings).
        """
        self._pending_keys.append((user_id, ids, contents))

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
        keys = [(m.user_id, m.reading_id) for m in readings]
        keys += [(m.user_id, m.content_key) for m in readings]
        self.known_keys = self.p.store.existing_keys(keys)
        self.p.preload({m.user_id for m in readings} - set(self.overlay))
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

    def process(self, m: Measurement, *, row: int | None = None, new: bool = False) -> Result:
        """Decide reading ``m`` (input row ``row``) into this unit.

        ``new``: the caller has found that ``m`` repeats no stored or staged reading (as
        :meth:`_duplicate` would), so it is not looked for again.
        """
        started = time.perf_counter()
        if not self._prefetched:
            self.known_keys = self.p.store.existing_keys(
                [(m.user_id, m.reading_id), (m.user_id, m.content_key)]
            )
        self._row = row
        result = self._decide(self.p.policy.with_offset(m), new)
        self.pending_events.append(
            (_reading_hook(self.p.observer, time.perf_counter() - started), result)
        )
        if self.direct:
            self.commit()
        return result

    def _decide(self, m: Measurement, new: bool = False) -> Result:
        dup = None if new else self._duplicate(m)
        if dup is not None:
            self.unit.results.append((self.input_id, dup))  # process() reports it, once
            return dup
        state = self.current(m.user_id)
        if state is not None and state.last_event_at is not None:
            last = state.last_event_at
            if m.timestamp < last or (m.timestamp == last and self._before_last(m)):
                return self._late(m, state)
        return self.p.apply(state, m, self)

    def _before_last(self, m: Measurement) -> bool:
        """Whether ``m``, at the same instant as its user's last reading, must be replayed.

        Same-instant readings are processed in content order (:func:`order_key`), not in
        arrival order. A reading that this unit knows to sort after the last one goes on as
        usual; any other (the last one came in an earlier unit) is replayed into place, which
        gives the same results as sorted input. Under ``reject_late`` only older readings are
        late.
        """
        if self.p.config.processing.late_policy == "reject_late":
            return False
        key = self._last_keys.get(m.user_id)
        return key is None or order_key(m) < key

    def _duplicate(self, m: Measurement) -> Result | None:
        key = (m.user_id, m.reading_id)
        key_seen = key in self.staged_keys or key in self.known_keys
        content = (m.user_id, m.content_key)
        if not key_seen and content not in self.staged_keys and content not in self.known_keys:
            return None
        reason = Reason.DUPLICATE_KEY if key_seen else Reason.DUPLICATE_CONTENT
        return self._plain(m, Verdict.DUPLICATE, reason, "already processed")

    def _late(self, m: Measurement, state: UserState) -> Result:
        if self.p.config.processing.late_policy == "reject_late":
            result = self._plain(
                m, Verdict.LATE, Reason.LATE_READING, "older than the user's last reading"
            )
            self.stage(None, m, result)
            return result
        return replay_late(self, m, state)

    def _plain(self, m: Measurement, verdict: Verdict, reason: Reason, message: str) -> Result:
        """The result of a reading the step does not see (a duplicate, a late one)."""
        return plain_result(self.p.policy, m, verdict, reason, message, self._row)

    def add_result(self, result: Result) -> None:
        """Record a result that changes no state (duplicate, invalid row)."""
        if self._row is not None and result.row is None:
            result = result.with_row(self._row)
        self.unit.results.append((self.input_id, result))
        self.pending_events.append((_reading_hook(self.p.observer, 0.0), result))
        if self.direct:
            self.commit()

    # -- staging ------------------------------------------------------------------------------

    def mark(self) -> Mark:
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
    ) -> Mark:
        """Stage reading ``m``, its result and (unless None) the user's new state."""
        mark = self.mark()
        row = self._row
        if row is not None and result.row != row:
            result = result.with_row(row)
        unit = self.unit
        unit.readings.append((m, result))
        unit.results.append((self.input_id, result))
        if audits:
            unit.audits.extend(audits)
        uid = m.user_id
        self._staged_keys.add((uid, m.reading_id))
        self._staged_keys.add((uid, m.content_key))
        if result.verdict is not Verdict.LATE:
            self.note_last_key(uid, order_key(m))
        if state is not None:
            self.stage_state(state, last_good=last_good)
        return mark

    def stage_state(self, state: UserState, *, last_good: bool = False) -> None:
        """Stage the user's new state (its readings are staged apart)."""
        uid = state.user_id
        previous = self.overlay.get(uid)
        self._undo_states.append((uid, previous, self.unit.last_good.get(uid)))
        if previous is None:
            stored = self.p.load_state(uid)
            self.unit.expected_versions[uid] = stored.version if stored is not None else 0
        self.unit.states[uid] = state
        self.overlay[uid] = state
        if last_good:
            self.unit.last_good[uid] = (state, self.p.clock.now())

    def last_key(self, user_id: str) -> OrderKey | None:
        """The processing-order key of the user's last reading staged in this unit."""
        return self._last_keys.get(user_id)

    def note_last_key(self, user_id: str, key: OrderKey) -> None:
        last = self._last_keys.get(user_id)
        if last is None or key > last:
            self._last_keys[user_id] = key

    def use_known_keys(self, keys: set[tuple[str, str]]) -> None:
        """Take ``keys`` as the stored keys of every reading this unit will see (prefetched)."""
        self.known_keys = keys
        self._prefetched = True

    def unstage(self, mark: Mark) -> None:
        """Take back the staging that returned ``mark`` (the last one with a state)."""
        readings, results, audits = mark
        for m, _ in self.unit.readings[readings:]:
            self.staged_keys.discard((m.user_id, m.reading_id))
            self.staged_keys.discard((m.user_id, m.content_key))
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
        result = result.with_row(old.row)
        self.unit.readings[index] = (m, result)
        for i, (input_id, staged) in enumerate(self.unit.results):
            if staged is old:
                self.unit.results[i] = (input_id, result)
                break

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
        self.p.remember(unit.states)
        self._reset_unit()
        for hook, value in events:  # observers see only what is durable
            hook(value)

    def _reset_unit(self) -> None:
        self.unit = UnitOfWork()
        self.overlay.clear()
        self._undo_states.clear()
        self._staged_keys.clear()
        self._pending_keys.clear()
        self._last_keys.clear()
        self.pending_events = []


def _reading_hook(observer: Observer, duration: float) -> Callable[[Any], None]:
    return lambda result: observer.reading_processed(result, duration)
