"""Replaying a user's stored history: late readings, rebuilds and self-healing.

One function, :func:`replay`, runs readings through a fresh
:class:`~weightstream.processor.Processor` on an in-memory store, in event-time order (ties
in arrival order). Everything that rebuilds state uses it, so a rebuild and live processing
take the same path and agree bit for bit (invariant I7):

* :func:`replay_late`: a reading older than the user's last one (late policy ``replay``) is
  inserted where it belongs and the user's later readings are re-decided; results then equal
  what sorted input gives. Re-issued results update the stored readings' history (the rows of
  earlier input files keep what they said then).
* :func:`rebuild_user`: ``weightstream recover USER``; and automatically for a user whose
  stored state row fails validation on load.

Readings marked ``late`` (policy ``reject_late``) are kept but never replayed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from weightstream import faults
from weightstream.config import Config
from weightstream.model import Measurement, Result, UserState, Verdict, to_micros
from weightstream.store.base import StateStore, UnitOfWork
from weightstream.store.memory import MemoryStore

if TYPE_CHECKING:
    from weightstream.processor import Batch

__all__ = ["replay", "rebuild_user", "replay_late", "Rebuild", "apply_rebuild"]


def replay(readings: list[Measurement], config: Config) -> tuple[UserState | None, list[Result]]:
    """Process ``readings`` (already ordered) from an empty state; the final state, results."""
    from weightstream.processor import Processor

    processor = Processor(MemoryStore(), config)
    with faults.no_chaos():
        results = [processor.process_one(m) for m in readings]
    user = readings[0].user_id if readings else None
    return (processor.store.load_state(user) if user else None), results


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
    rebuilt, results = replay([r.measurement for r in rows], config)
    changed = [
        (row.measurement, new)
        for row, new in zip(rows, results, strict=True)
        if _decision(row.result) != _decision(new)
    ]
    return Rebuild(user_id, rebuilt, store.load_state(user_id), len(rows), changed)


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
        (to_micros(r.measurement.timestamp), 0, r.seq, r.measurement, r.result)
        for r in batch.p.store.history(user)
        if r.result.verdict is not Verdict.LATE
    ]
    staged = [
        (to_micros(sm.timestamp), 1, i, sm, sr)
        for i, (sm, sr) in enumerate(batch.unit.readings)
        if sm.user_id == user and sr.verdict is not Verdict.LATE
    ]
    ordered = sorted(
        [*stored, *staged, (to_micros(m.timestamp), 2, 0, m, None)], key=lambda t: t[:3]
    )
    final, results = replay([t[3] for t in ordered], batch.p.config)
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
    batch.stage(final, m, mine, audits=[], last_good=True)
    return mine


def _decision(r: Result) -> tuple[object, ...]:
    return (r.verdict, r.reason, r.filtered_weight, r.trend_kg_week, r.std_kg, r.reset_type)
