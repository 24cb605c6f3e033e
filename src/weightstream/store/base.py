"""The store's contract: what every back-end (memory, SQLite, PostgreSQL) must do.

A store owns its transactions. Callers never BEGIN or COMMIT: they hand a whole
:class:`UnitOfWork` to :meth:`StateStore.commit`, which writes the new user states, every
result, the readings' history, the reset audit records, the recovery attempts, last-known-good
snapshots and the input position in ONE transaction, or nothing at all (raising a
:class:`~weightstream.errors.StorageError`). Each new state names the version it replaces; if
the stored version moved (another writer), the whole unit fails with
:class:`~weightstream.errors.ConflictError` and the caller redoes it from fresh state.

Queries never change anything.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from weightstream.model import Measurement, RecoveryAttempt, ResetAudit, Result, UserState

if TYPE_CHECKING:
    import polars as pl

__all__ = ["UnitOfWork", "HistoryRow", "StateStore", "ResultRows"]


@dataclass(frozen=True, slots=True)
class HistoryRow:
    """A stored reading (never a duplicate or an invalid row) with its current result."""

    measurement: Measurement
    result: Result
    seq: int


@dataclass
class UnitOfWork:
    """Everything one commit writes. Built by the processor, written whole by the store."""

    states: dict[str, UserState] = field(default_factory=dict)
    expected_versions: dict[str, int] = field(default_factory=dict)
    readings: list[tuple[Measurement, Result]] = field(default_factory=list)
    replaced_readings: list[tuple[Measurement, Result]] = field(default_factory=list)
    results: list[tuple[str | None, Result]] = field(default_factory=list)
    audits: list[ResetAudit] = field(default_factory=list)
    recoveries: list[RecoveryAttempt] = field(default_factory=list)
    last_good: dict[str, tuple[UserState, datetime]] = field(default_factory=dict)
    position: tuple[str, int] | None = None
    #: Readings and results already encoded as rows (``codec.READING_COLUMNS`` and
    #: ``codec.RESULT_COLUMNS`` order): the file engine stages its common path this way, with
    #: no objects per reading. They are stored exactly as the objects above would be.
    reading_rows: list[tuple[Any, ...]] = field(default_factory=list)
    result_rows: list[tuple[Any, ...]] = field(default_factory=list)
    #: Where the result of each of ``reading_rows`` stands in ``result_rows`` (the same
    #: reading, decided once): a store may keep only what the reading row does not hold.
    result_of_reading: list[int] = field(default_factory=list)
    #: Users whose stored row is corrupt, with its ``version`` column exactly as stored: the
    #: staged state replaces that row only while the column still holds that raw value.
    corrupt_versions: dict[str, object] = field(default_factory=dict)

    def put_state(self, state: UserState, expected_version: int) -> None:
        """Stage ``state``; ``expected_version`` is the version stored before this unit."""
        self.expected_versions.setdefault(state.user_id, expected_version)
        self.states[state.user_id] = state

    def replace_corrupt(self, state: UserState, stored_version: object) -> None:
        """Stage ``state`` over a corrupt stored row whose raw version is ``stored_version``."""
        self.corrupt_versions[state.user_id] = stored_version
        self.states[state.user_id] = state

    def __len__(self) -> int:
        return len(self.results) + len(self.result_rows)

    def with_objects(self) -> UnitOfWork:
        """This unit with its encoded rows decoded into objects (for stores that keep objects)."""
        if not (self.reading_rows or self.result_rows):
            return self
        from weightstream.store import codec

        readings = [*self.readings, *(codec.row_to_reading(r) for r in self.reading_rows)]
        results = [*self.results, *((r[0], codec.row_to_result(r)) for r in self.result_rows)]
        return replace(
            self,
            readings=readings,
            results=results,
            reading_rows=[],
            result_rows=[],
            result_of_reading=[],
        )

    @property
    def empty(self) -> bool:
        return not (
            self.states
            or self.results
            or self.audits
            or self.recoveries
            or self.position
            or self.readings
            or self.replaced_readings
            or self.last_good
            or self.reading_rows
            or self.result_rows
        )


@runtime_checkable
class StateStore(Protocol):
    """Durable per-user state and history."""

    def commit(self, unit: UnitOfWork) -> None:
        """Write the whole unit in one transaction, or nothing (raise StorageError)."""
        ...

    def load_state(self, user_id: str) -> UserState | None:
        """The stored state, or None for an unknown user. Raises StateCorruptionError."""
        ...

    def load_states(self, user_ids: Iterable[str]) -> dict[str, UserState]:
        """Stored states of several users (unknown users are absent).

        Each row is decoded on its own: a row that does not decode is left out too (load that
        user alone with :meth:`load_state` to get its StateCorruptionError), so one corrupt
        row never fails the others.
        """
        ...

    def known_users(self, user_ids: Iterable[str]) -> set[str]:
        """Which of ``user_ids`` have a stored state row (whether or not it decodes)."""
        ...

    def state_versions(self, user_ids: Iterable[str]) -> dict[str, int]:
        """The stored state version of each of ``user_ids`` that has a state row (whether or
        not it decodes). Every commit of a state moves its version, so a process that shares
        the store learns from this whether a state it cached is still the stored one, without
        loading or decoding any state."""
        ...

    def existing_keys(self, keys: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which of ``keys``, (user id, reading id or content key), are already stored.

        A reading is identified within its user: the same id under another user is another
        reading (a collision of ids across users must not lose a reading).
        """
        ...

    def history(self, user_id: str) -> list[HistoryRow]:
        """The user's stored readings in processing order (event time, then arrival)."""
        ...

    def stored_reading(self, user_id: str, reading_id: str) -> HistoryRow | None:
        """The user's stored reading with that id, with its current result (None if none)."""
        ...

    def accepted_between(
        self, user_id: str, start: datetime, end: datetime
    ) -> list[tuple[datetime, float]]:
        """Accepted readings with start <= time < end, oldest first: (time, weight less its
        offset), the weight the filter took."""
        ...

    def nearest_accepted(
        self, user_id: str, when: datetime
    ) -> tuple[tuple[datetime, float] | None, tuple[datetime, float] | None]:
        """The accepted readings nearest before (<=) and after (>) ``when`` (weights less
        their offsets, as in :meth:`accepted_between`)."""
        ...

    def last_good(self, user_id: str) -> tuple[UserState, datetime] | None:
        """The user's last-known-good state and when it was taken.

        None also for a snapshot that does not decode: it is only a fallback, and the chain
        goes on to the recovery service (a state it gives is validated before use anyway).
        """
        ...

    def position(self, input_id: str) -> int:
        """How many readings of that input are committed (0 if none)."""
        ...

    def results_for_input(self, input_id: str) -> Iterator[Result]:
        """Stored results of an input, by row number."""
        ...

    def audits(self, user_id: str | None = None, outcome: str | None = None) -> list[ResetAudit]:
        """Reset audit records, oldest first."""
        ...

    def recovery_attempts(self, user_id: str | None = None) -> list[RecoveryAttempt]:
        """Recovery attempts, oldest first."""
        ...

    def users(self) -> list[str]:
        """Every user with a stored state."""
        ...

    def close(self) -> None:
        """Release the connection."""
        ...


@runtime_checkable
class ResultRows(Protocol):
    """Optional fast path of a store: an input's results as flat rows, not ``Result`` values.

    Writing a results file of a million rows from ``Result`` objects spends most of its time
    building them; a store that can hand out its rows directly implements this. Each row is
    a tuple in :data:`weightstream.pipeline.RESULT_FIELDS` order, holding exactly what the
    results file shows (``""`` for an absent text, the ISO time as text, floats as floats),
    so ``csv.writer`` writes it unchanged. Stores without it are read through
    :meth:`StateStore.results_for_input`.
    """

    def iter_result_rows(self, input_id: str) -> Iterator[tuple[Any, ...]]:
        """The input's results as results-file rows, by row number."""
        ...


@runtime_checkable
class ResultFrames(Protocol):
    """Optional faster path of a store: an input's results as polars frames, to be counted
    and formatted column-wise (:func:`weightstream.engine.results.results_lines`) instead of
    row by row with ``csv.writer``.

    Each frame has the results file's columns under the store's names (``ts``, the time as
    UTC microseconds, for ``timestamp``), typed, absent values null, at most ``rows`` rows;
    together the frames hold every result of the input, by row number.
    """

    def result_frames(self, input_id: str, rows: int) -> Iterator[pl.DataFrame]:
        """The input's results, ``rows`` at a time, by row number."""
        ...
