"""An in-memory store with the same contract as SQLite (tests, replays, the library).

A commit checks everything that could fail (versions, unique keys, position) before changing
anything, then applies the unit; so it is all-or-nothing like the database stores.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterable, Iterator
from datetime import datetime

from weightstream.errors import ConflictError
from weightstream.model import (
    Measurement,
    RecoveryAttempt,
    ResetAudit,
    Result,
    UserState,
    Verdict,
    to_micros,
)
from weightstream.store.base import HistoryRow, UnitOfWork

__all__ = ["MemoryStore"]


class MemoryStore:
    """A :class:`~weightstream.store.base.StateStore` held in dicts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._states: dict[str, UserState] = {}
        self._last_good: dict[str, tuple[UserState, datetime]] = {}
        # A reading is identified within its user: (user, id) and (user, content key).
        self._readings: dict[tuple[str, str], tuple[Measurement, Result, int]] = {}
        self._content: set[tuple[str, str]] = set()
        self._by_user: dict[str, list[tuple[int, int, str]]] = {}
        self._results: dict[str | None, list[Result]] = {}
        self._result_rows: set[tuple[str | None, int]] = set()
        self._audits: list[ResetAudit] = []
        self._recoveries: list[RecoveryAttempt] = []
        self._positions: dict[str, int] = {}
        self._seq = 0

    def commit(self, unit: UnitOfWork) -> None:
        unit = unit.with_objects()
        with self._lock:
            self._check(unit)
            self._apply(unit)

    def _check(self, unit: UnitOfWork) -> None:
        for uid, state in unit.states.items():
            stored = self._states.get(uid)
            if uid in unit.corrupt_versions:
                if stored is None or stored.version != unit.corrupt_versions[uid]:
                    raise ConflictError("corrupt user state changed under its repair", user_id=uid)
                continue
            expected = unit.expected_versions.get(uid, state.version - 1)
            if (stored.version if stored else 0) != expected:
                raise ConflictError("user state changed under this unit", user_id=uid)
            if state.version <= expected:
                raise ConflictError("state version does not move forward", user_id=uid)
        for m, _ in unit.replaced_readings:
            if (m.user_id, m.reading_id) not in self._readings:
                raise ConflictError("replaced reading is not stored", reading_id=m.reading_id)
        rows: set[tuple[str | None, int]] = set()
        for input_id, r in unit.results:
            if r.row is None:
                continue
            slot = (input_id, r.row)
            if slot in rows or slot in self._result_rows:
                raise ConflictError(f"result for row {r.row} already stored")
            rows.add(slot)
        ids: set[tuple[str, str]] = set()
        contents: set[tuple[str, str]] = set()
        for m, _ in unit.readings:
            key, content = (m.user_id, m.reading_id), (m.user_id, m.content_key)
            if (
                key in ids
                or key in self._readings
                or content in contents
                or content in self._content
            ):
                raise ConflictError("reading already stored", reading_id=m.reading_id)
            ids.add(key)
            contents.add(content)
        if unit.position is not None:
            input_id, position = unit.position
            if position < self._positions.get(input_id, 0):
                raise ConflictError(f"input position of {input_id} moved past this unit")

    def _apply(self, unit: UnitOfWork) -> None:
        for m, r in unit.readings:
            self._seq += 1
            self._readings[(m.user_id, m.reading_id)] = (m, r, self._seq)
            self._content.add((m.user_id, m.content_key))
            bisect.insort(
                self._by_user.setdefault(m.user_id, []),
                (to_micros(m.timestamp), self._seq, m.reading_id),
            )
        for m, r in unit.replaced_readings:
            _, _, seq = self._readings[(m.user_id, m.reading_id)]
            self._readings[(m.user_id, m.reading_id)] = (m, r, seq)
        for input_id, r in unit.results:
            self._results.setdefault(input_id, []).append(r)
            if r.row is not None:
                self._result_rows.add((input_id, r.row))
        self._states.update(unit.states)
        self._last_good.update(unit.last_good)
        self._audits.extend(unit.audits)
        self._recoveries.extend(unit.recoveries)
        if unit.position is not None:
            self._positions[unit.position[0]] = unit.position[1]

    def load_state(self, user_id: str) -> UserState | None:
        return self._states.get(user_id)

    def load_states(self, user_ids: Iterable[str]) -> dict[str, UserState]:
        return {u: self._states[u] for u in user_ids if u in self._states}

    def known_users(self, user_ids: Iterable[str]) -> set[str]:
        return set(self.state_versions(user_ids))

    def state_versions(self, user_ids: Iterable[str]) -> dict[str, int]:
        return {u: self._states[u].version for u in user_ids if u in self._states}

    def existing_keys(self, keys: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        return {k for k in keys if k in self._readings or k in self._content}

    def history(self, user_id: str) -> list[HistoryRow]:
        out = []
        for _, seq, key in self._by_user.get(user_id, []):
            m, r, _ = self._readings[(user_id, key)]
            out.append(HistoryRow(m, r, seq))
        return out

    def stored_reading(self, user_id: str, reading_id: str) -> HistoryRow | None:
        found = self._readings.get((user_id, reading_id))
        return None if found is None else HistoryRow(*found)

    def _accepted(self, user_id: str) -> list[tuple[datetime, float]]:
        return [
            (row.measurement.timestamp, row.measurement.filter_kg)
            for row in self.history(user_id)
            if row.result.verdict is Verdict.ACCEPTED
        ]

    def accepted_between(
        self, user_id: str, start: datetime, end: datetime
    ) -> list[tuple[datetime, float]]:
        return [(t, w) for t, w in self._accepted(user_id) if start <= t < end]

    def nearest_accepted(
        self, user_id: str, when: datetime
    ) -> tuple[tuple[datetime, float] | None, tuple[datetime, float] | None]:
        rows = self._accepted(user_id)
        before = [r for r in rows if r[0] <= when]
        after = [r for r in rows if r[0] > when]
        return (before[-1] if before else None, after[0] if after else None)

    def last_good(self, user_id: str) -> tuple[UserState, datetime] | None:
        return self._last_good.get(user_id)

    def position(self, input_id: str) -> int:
        return self._positions.get(input_id, 0)

    def results_for_input(self, input_id: str) -> Iterator[Result]:
        return iter(sorted(self._results.get(input_id, []), key=lambda r: r.row or 0))

    def audits(self, user_id: str | None = None, outcome: str | None = None) -> list[ResetAudit]:
        return [
            a
            for a in self._audits
            if (user_id is None or a.user_id == user_id)
            and (outcome is None or outcome in (a.outcome, a.fallback))
        ]

    def recovery_attempts(self, user_id: str | None = None) -> list[RecoveryAttempt]:
        return [a for a in self._recoveries if user_id is None or a.user_id == user_id]

    def users(self) -> list[str]:
        return sorted(self._states)

    def close(self) -> None:
        pass
