"""The embedded default store: SQLite through the standard library's ``sqlite3``.

Opening, in this order:

1. the file is checked to be ours (SQLite header, then ``application_id``) before anything is
   written to it; a corrupt or foreign file is refused and never modified, and a missing file
   is only created when asked;
2. ``busy_timeout`` first among the settings, so everything after waits for a lock instead of
   failing;
3. ``journal_mode=WAL`` and ``synchronous=FULL``, read back and *required* (a weaker mode is
   refused with :class:`StoreOpenError` unless ``allow_unsafe_durability`` is configured).

Every write is one ``BEGIN IMMEDIATE`` ... ``COMMIT`` owned by :meth:`SQLiteStore.commit`
(a deferred transaction that later upgrades to a write lock fails at once with "database is
locked", ignoring the busy timeout). Any error inside the transaction rolls the whole unit
back and surfaces as a typed :class:`StorageError`; the store never carries on after one.
A connection is never used across ``fork``. Worker processes of one run that share the file
take turns through a :class:`~weightstream.store.gate.WriteGate` (``gate``) held around each
transaction.
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext, suppress
from datetime import UTC, datetime
from functools import lru_cache
from itertools import chain, compress, islice
from operator import and_, itemgetter, not_
from pathlib import Path
from typing import TYPE_CHECKING, Any

from weightstream.clock import SYSTEM_CLOCK, Clock
from weightstream.config import StoreConfig
from weightstream.errors import (
    ConflictError,
    StateCorruptionError,
    StorageError,
    StoreBusyError,
    StoreOpenError,
)
from weightstream.faults import NO_FAULTS, FaultPoints
from weightstream.model import (
    RecoveryAttempt,
    ResetAudit,
    Result,
    UserState,
    from_micros,
    to_micros,
)
from weightstream.observe import Observer
from weightstream.store import codec
from weightstream.store.base import HistoryRow, UnitOfWork
from weightstream.store.checkpointer import Checkpointer
from weightstream.store.columns import (
    AUDITS,
    FILE_CELLS,
    FILE_TIMES,
    READING_DECIDED,
    READINGS,
    RECOVERIES,
    RESULT_DECIDED_IN_READING,
    RESULT_KEPT_WITH_READING,
    RESULTS,
    STATES,
    Kind,
)
from weightstream.store.gate import WriteGate
from weightstream.store.schema import MIGRATIONS
from weightstream.store.sqlite_open import check_file, configure, migrate, typed

if TYPE_CHECKING:
    import polars as pl

__all__ = ["SQLiteStore"]

_CHUNK = 500  # host parameters per IN (...) query
_PAIRS = 400  # (user, key) pairs per existing_keys query: 1,600 host parameters
_MIN_US = to_micros(datetime.min.replace(tzinfo=UTC))
_MAX_US = to_micros(datetime.max.replace(tzinfo=UTC))

_STATE_COLS = STATES.column_list()
_STATE_MARKS = ", ".join("?" * len(STATES.names))
_STATE_SETS = STATES.assignments(STATES.names[1:])
_READING_COLS = READINGS.column_list()
# A reading row is written into ``reading_rows`` (migration 7), its user as the number
# ``users`` gives the user's id (inserted first, once a unit); ``readings`` is a view of it.
_UID = "(SELECT uid FROM users WHERE user_id = ?{})"
_READING_INSERT = "INSERT INTO reading_rows ({}) VALUES ({})".format(
    READINGS.column_list().replace("user_id", "uid"),
    ", ".join(
        _UID.format(k + 1) if name == "user_id" else f"?{k + 1}"
        for k, name in enumerate(READINGS.names)
    ),
)
_USER_INSERT = "INSERT OR IGNORE INTO users (user_id) VALUES (?)"
_READING_UPDATE = (
    f"UPDATE reading_rows SET {READINGS.assignments(READING_DECIDED)} "
    f"WHERE uid = {_UID.format('')} AND key = ?"
)
# A result is stored with its input's number where the record holds the input's id text.
_INPUT_REF = "(SELECT ref FROM inputs WHERE input_id = ?)"

# A result is read through the view ``results_full`` (migration 5): a linked result's
# identity comes from its reading's row.
_RESULT_STORED = RESULTS.column_list(RESULTS.names[1:])
# Result rows are inserted as they are staged (codec.RESULT_COLUMNS order, the input's id text
# first): parameters by number, so SQL picks the columns it keeps and no row is rebuilt.
_ARG = {name: f"?{k + 1}" for k, name in enumerate(RESULTS.names)}
_RESULT_INSERT = "INSERT INTO results ({}) VALUES ({{ref}}, {})".format(
    RESULTS.column_list(), ", ".join(_ARG[n] for n in RESULTS.names[1:])
)
# Before a replay changes a stored reading's decision, the results linked to it take their
# copy of the decision they were given (once: a result that has one keeps it).
_LINKED_KEEP = (
    "UPDATE results SET ({}) = "
    "(SELECT {} FROM reading_rows g WHERE g.seq = results.reading_seq) "
    "WHERE verdict IS NULL AND reading_seq = "
    "(SELECT seq FROM readings WHERE user_id = ? AND key = ?)"
).format(", ".join(RESULT_DECIDED_IN_READING), ", ".join(RESULT_DECIDED_IN_READING))
_FIRST_DECIDED = READINGS.index(READING_DECIDED[0])
# A staged reading's result lives in the reading's row (migration 8): the result's own
# columns (result column -> reading_rows column), after the reading's, the input's number
# first. input_ref 0: a result given with no input (the service's); it has no span.
_MERGED = RESULT_KEPT_WITH_READING
# A staged reading's row with its result: seq (given by the store), the reading's columns,
# the input's number, the result's own columns. Python's sqlite3 binds a None through its
# adapter look-up, several times slower than a number (a quarter of the insert's CPU with four
# NULLs a row, measured), so the columns that are NULL in most rows (no reset, no offset) come
# last, and a row whose last ones are all NULL is inserted by a statement without them.
_OFTEN_NULL_READING = ("reset_type", "reset_outcome")
_OFTEN_NULL_RESULT = ("quality_components", "offset_kg")
_READING_HEAD = tuple(n for n in READINGS.names if n not in _OFTEN_NULL_READING)
_RESULT_HEAD = tuple(n for n in _MERGED if n not in _OFTEN_NULL_RESULT)
_reading_head = itemgetter(*(READINGS.index(n) for n in _READING_HEAD))
_result_head = itemgetter(*(RESULTS.index(n) for n in _RESULT_HEAD))
_reading_tail = itemgetter(*(READINGS.index(n) for n in _OFTEN_NULL_READING))
_result_tail = itemgetter(*(RESULTS.index(n) for n in _OFTEN_NULL_RESULT))
# Each itemgetter picks two or more columns, so it gives a tuple (tests/store pins it).
#: The often-NULL columns (reset type and outcome of a staged reading row, quality
#: components and offset of its result) when they are all NULL.
_NO_READING_TAIL = (None,) * len(_OFTEN_NULL_READING)
_NO_RESULT_TAIL = (None,) * len(_OFTEN_NULL_RESULT)
# Values in a merged row: its seq, the heads, and in the long form both tails.
_SHORT_WIDTH = 1 + len(_READING_HEAD) + len(_RESULT_HEAD)
_LONG_WIDTH = _SHORT_WIDTH + len(_OFTEN_NULL_READING) + len(_OFTEN_NULL_RESULT)


def _merged_insert(tail: bool) -> str:
    """The insert of staged rows with their results, with or without the often-NULL tail."""
    names = [
        "seq",
        *("uid" if n == "user_id" else n for n in _READING_HEAD),
        *(_MERGED[n] for n in _RESULT_HEAD),
    ]
    values = [f"?{k + 1}" for k in range(len(names))]
    values[names.index("uid")] = _UID.format(names.index("uid") + 1)
    if tail:
        names += [*_OFTEN_NULL_READING, *(_MERGED[n] for n in _OFTEN_NULL_RESULT)]
        values += [f"?{k + 1}" for k in range(len(values), len(names))]
    return "INSERT INTO reading_rows ({}, input_ref) VALUES ({}, {{ref}})".format(
        ", ".join(names), ", ".join(values)
    )


_MERGED_SHORT = _merged_insert(tail=False)
_MERGED_LONG = _merged_insert(tail=True)
# Before a replay changes a reading's decision, the result kept in its row moves, whole and
# as decided, into ``results``; the row keeps only the reading.
_MERGED_KEEP = (
    "INSERT INTO results (input_ref, reading_id, user_id, verdict, reason, message, ts, "
    "source, weight_kg, filtered_weight, trend_kg_week, std_kg, reset_type, reset_outcome, "
    f"quality, {', '.join(_MERGED)}) "
    "SELECT nullif(g.input_ref, 0), g.key, u.user_id, g.verdict, g.reason, g.message, g.ts, "
    "g.source, g.weight_kg, g.filtered_weight, g.trend_kg_week, g.std_kg, g.reset_type, "
    f"g.reset_outcome, g.quality, {', '.join('g.' + c for c in _MERGED.values())} "
    "FROM reading_rows g JOIN users u ON u.uid = g.uid "
    "WHERE u.user_id = ?1 AND g.key = ?2 AND g.input_ref IS NOT NULL"
)
_MERGED_CLEAR = "UPDATE reading_rows SET input_ref = NULL, {} WHERE uid = {} AND key = ?2".format(
    ", ".join(f"{c} = NULL" for c in _MERGED.values()), _UID.format(1)
)
_READING_USER = READINGS.index("user_id")
_AUDIT_COLS = AUDITS.column_list()
_AUDIT_INSERT = AUDITS.insert()
_RECOVERY_COLS = RECOVERIES.column_list()
_RECOVERY_INSERT = RECOVERIES.insert()


class SQLiteStore:
    """A :class:`~weightstream.store.base.StateStore` on one SQLite file.

    ``clock`` gives the stored times (migrations, input positions) and the waits while the
    file is switched to WAL; ``faults`` marks the write path with crash points
    (:mod:`weightstream.faults`, inert by default); ``gate``, held around each write
    transaction, orders the worker processes of one run (:mod:`weightstream.store.gate`).
    ``background_checkpoint``: the WAL is copied into the database by a thread of its own
    (:mod:`weightstream.store.checkpointer`), restarted once it holds
    ``wal_autocheckpoint_pages``, and never by a commit.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        create: bool = True,
        busy_timeout_ms: int = 5000,
        allow_unsafe_durability: bool = False,
        cache_mb: int = 32,
        wal_autocheckpoint_pages: int = 10_000,
        background_checkpoint: bool = False,
        observer: Observer | None = None,
        clock: Clock = SYSTEM_CLOCK,
        faults: FaultPoints = NO_FAULTS,
        gate: WriteGate | None = None,
    ) -> None:
        self.path = Path(path)
        self.clock = clock
        self.faults = faults
        self._gate = gate
        # With a checkpoint thread, the writer never checkpoints (0 turns SQLite's off).
        checkpoint_pages = 0 if background_checkpoint else int(wal_autocheckpoint_pages)
        self._tuning = (int(cache_mb), checkpoint_pages)
        self._checkpointer: Checkpointer | None = None
        self._observer = observer or Observer()
        self._pid = os.getpid()
        check_file(self.path, create=create)
        try:
            self._conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=0
            )
        except sqlite3.Error as exc:
            raise StoreOpenError(f"cannot open database {self.path}: {exc}") from None
        try:
            configure(
                self._conn,
                self.path,
                clock,
                busy_timeout_ms,
                allow_unsafe_durability,
                self._tuning,
            )
            migrate(self._conn, clock, MIGRATIONS)
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            if isinstance(typed(exc), StoreBusyError):  # another opener or writer: retry
                raise StoreBusyError(f"database {self.path} is locked: {exc}") from None
            raise StoreOpenError(
                f"not a usable weightstream database: {self.path}: {exc}"
            ) from None
        except StoreOpenError:
            self._conn.close()
            raise
        if background_checkpoint:
            self._checkpointer = Checkpointer(
                self.path, restart_pages=int(wal_autocheckpoint_pages), observer=self._observer
            )

    @classmethod
    def from_config(
        cls,
        config: StoreConfig,
        path: str | Path | None = None,
        *,
        create: bool = True,
        observer: Observer | None = None,
        clock: Clock = SYSTEM_CLOCK,
        faults: FaultPoints = NO_FAULTS,
        gate: WriteGate | None = None,
    ) -> SQLiteStore:
        """A store with the configured settings (``path`` overrides ``config.path``)."""
        return cls(
            config.path if path is None else path,
            create=create,
            busy_timeout_ms=config.busy_timeout_ms,
            allow_unsafe_durability=config.allow_unsafe_durability,
            cache_mb=config.cache_mb,
            wal_autocheckpoint_pages=config.wal_autocheckpoint_pages,
            background_checkpoint=config.background_checkpoint,
            observer=observer,
            clock=clock,
            faults=faults,
            gate=gate,
        )

    # -- the one write path ---------------------------------------------------------------

    def commit(self, unit: UnitOfWork) -> None:
        if os.getpid() != self._pid:
            raise StorageError("SQLite connection used across fork; open a new store")
        if unit.empty:
            return
        with self._gate or nullcontext():  # the run's other processes wait in the kernel
            self._transaction(unit)

    def _transaction(self, unit: UnitOfWork) -> None:
        started = time.perf_counter()
        c = self._conn
        try:
            c.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise typed(exc) from None
        faults = self.faults
        try:
            faults.crash_point("store.after_begin")
            self._write(unit)
            faults.crash_point("store.before_commit")
            c.execute("COMMIT")
        except BaseException as exc:
            with suppress(sqlite3.Error):
                c.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise typed(exc) from None
            raise
        faults.crash_point("store.after_commit")
        if self._checkpointer is not None:
            # The unit is committed whatever this does: a failed checkpoint is retried later.
            with suppress(sqlite3.Error):
                self._checkpointer.after_commit(c)
        self._observer.store_committed(time.perf_counter() - started, len(unit))

    def _write(self, unit: UnitOfWork) -> None:
        c = self._conn
        new_rows = [codec.reading_to_row(m, r) for m, r in unit.readings]
        users = dict.fromkeys(
            row[_READING_USER] for rows in (new_rows, unit.reading_rows) for row in rows
        )
        if users:
            c.executemany(_USER_INSERT, [(u,) for u in users])
        if new_rows:
            c.executemany(_READING_INSERT, new_rows)
        results = [codec.result_to_row(i, r) for i, r in unit.results]
        if unit.reading_rows:
            results += self._insert_staged(unit)
        else:
            results += unit.result_rows
        for m, r in unit.replaced_readings:
            row = codec.reading_to_row(m, r)
            c.execute(_LINKED_KEEP, (m.user_id, m.reading_id))
            c.execute(_MERGED_KEEP, (m.user_id, m.reading_id))
            c.execute(_MERGED_CLEAR, (m.user_id, m.reading_id))
            cur = c.execute(_READING_UPDATE, (*row[_FIRST_DECIDED:], m.user_id, m.reading_id))
            if cur.rowcount != 1:
                raise ConflictError("replaced reading is not stored", reading_id=m.reading_id)
        self.faults.crash_point("store.after_results")
        self._insert_results(results)
        if unit.states:
            fresh, known, corrupt = [], [], []
            for uid, state in unit.states.items():
                if uid in unit.corrupt_versions:
                    raw_version = unit.corrupt_versions[uid]
                    corrupt.append((*codec.state_to_row(state)[1:], uid, raw_version))
                    continue
                expected = unit.expected_versions.get(uid, state.version - 1)
                if state.version <= expected:
                    raise ConflictError("state version does not move forward", user_id=uid)
                row = codec.state_to_row(state)
                if expected == 0:
                    fresh.append(row)
                else:
                    known.append((*row[1:], uid, expected))
            # A fresh user inserts (a row already there is a UNIQUE violation -> conflict);
            # a known one updates only from the version this unit was computed on.
            if fresh:
                c.executemany(
                    f"INSERT INTO user_states ({_STATE_COLS}) VALUES ({_STATE_MARKS})", fresh
                )
            if known:
                cur = c.executemany(
                    f"UPDATE user_states SET {_STATE_SETS} WHERE user_id = ? AND version = ?",
                    known,
                )
                if cur.rowcount != len(known):
                    raise ConflictError(
                        f"{len(known) - cur.rowcount} user state(s) changed under this unit"
                    )
            for row in corrupt:  # a repair: only over the corrupt row exactly as it was read
                cur = c.execute(
                    f"UPDATE user_states SET {_STATE_SETS} WHERE user_id = ? AND version IS ?",
                    row,
                )
                if cur.rowcount != 1:
                    raise ConflictError("corrupt user state changed under its repair")
            self.faults.crash_point("store.after_state")
        if unit.last_good:
            c.executemany(
                f"INSERT OR REPLACE INTO last_good_states ({_STATE_COLS}, taken_at) "
                f"VALUES ({_STATE_MARKS}, ?)",
                [(*codec.state_to_row(s), to_micros(t)) for s, t in unit.last_good.values()],
            )
        if unit.audits:
            c.executemany(_AUDIT_INSERT, [codec.audit_to_row(a) for a in unit.audits])
        if unit.recoveries:
            c.executemany(_RECOVERY_INSERT, [codec.recovery_to_row(a) for a in unit.recoveries])
        if unit.position is not None:
            input_id, position = unit.position
            cur = c.execute(
                "INSERT INTO input_positions VALUES (?, ?, ?) ON CONFLICT (input_id) DO UPDATE "
                "SET position = excluded.position, updated_at = excluded.updated_at "
                "WHERE excluded.position >= input_positions.position",
                (input_id, position, to_micros(self.clock.now())),
            )
            if cur.rowcount != 1:
                raise ConflictError(f"input position of {input_id} moved past this unit")
            self.faults.crash_point("store.after_position")

    def _insert_staged(self, unit: UnitOfWork) -> list[tuple[Any, ...]]:
        """Insert the staged reading rows, each with its result when the unit pairs them.

        Returns the staged result rows still to insert into ``results``: the unpaired ones, or
        all of them when the paired results come from more than one input (then the readings
        are inserted alone).
        """
        c = self._conn
        rows, paired = unit.result_rows, unit.result_of_reading
        inputs = {rows[k][0] for k in paired}
        if not paired or len(inputs) > 1:
            c.executemany(_READING_INSERT, unit.reading_rows)
            return rows
        (input_id,) = inputs
        ref = 0 if input_id is None else self._input_ref(input_id)
        # The rows take the seqs after the largest (as SQLite would number them), in order.
        (first,) = c.execute("SELECT coalesce(max(seq), 0) + 1 FROM reading_rows").fetchone()
        readings = unit.reading_rows
        results = list(map(rows.__getitem__, paired))
        if len(results) != len(readings):
            raise ValueError("a unit pairs results with readings one to one")
        # A row is bare when its often-NULL columns are all NULL (the usual case): it takes
        # the short statement. Each row is cut up and flattened by itemgetters, zip and
        # chain (no Python code per row): the store's own share of a group was a fifth less.
        bare = list(
            map(
                and_,
                map(_NO_READING_TAIL.__eq__, map(_reading_tail, readings)),
                map(_NO_RESULT_TAIL.__eq__, map(_result_tail, results)),
            )
        )
        seqs = range(first, first + len(readings))
        short = bare.count(True)
        if short:
            parts: tuple[Iterator[tuple[Any, ...]], ...] = (
                zip(compress(seqs, bare)),
                map(_reading_head, compress(readings, bare)),
                map(_result_head, compress(results, bare)),
            )
            _insert_flat(c, _MERGED_SHORT.format(ref=ref), _flat(parts), short, _SHORT_WIDTH)
        if short < len(readings):
            other = list(map(not_, bare))
            parts = (
                zip(compress(seqs, other)),
                map(_reading_head, compress(readings, other)),
                map(_result_head, compress(results, other)),
                map(_reading_tail, compress(readings, other)),
                map(_result_tail, compress(results, other)),
            )
            count = len(readings) - short
            _insert_flat(c, _MERGED_LONG.format(ref=ref), _flat(parts), count, _LONG_WIDTH)
        if ref:
            c.execute(
                "INSERT INTO input_spans VALUES (?, ?, ?)", (ref, first, first + len(paired) - 1)
            )
        taken = set(paired)
        return [row for k, row in enumerate(rows) if k not in taken]

    def _input_ref(self, input_id: str) -> int:
        """The number of input ``input_id``, which is given one if it has none yet."""
        c = self._conn
        c.execute("INSERT OR IGNORE INTO inputs (input_id) VALUES (?)", (input_id,))
        (ref,) = c.execute("SELECT ref FROM inputs WHERE input_id = ?", (input_id,)).fetchone()
        return int(ref)

    def _insert_results(self, rows: list[tuple[Any, ...]]) -> None:
        """Insert result rows (codec order), each input's text stored once, as a number."""
        if not rows:
            return
        ids = {row[0] for row in rows}
        # One input (a file's group; the service's readings have none): its number is written
        # into the statement; otherwise looked up per row.
        ref = _INPUT_REF.replace("?", "?1")
        if len(ids) == 1:
            (only,) = ids
            ref = "NULL" if only is None else str(self._input_ref(only))
        else:
            for input_id in ids:
                if input_id is not None:
                    self._input_ref(input_id)
        self._conn.executemany(_RESULT_INSERT.format(ref=ref), rows)

    # -- queries ------------------------------------------------------------------------

    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        try:
            return self._conn.execute(sql, tuple(params)).fetchall()
        except sqlite3.Error as exc:
            raise typed(exc) from None

    def load_state(self, user_id: str) -> UserState | None:
        rows = self._query(f"SELECT {_STATE_COLS} FROM user_states WHERE user_id = ?", (user_id,))
        return codec.row_to_state(rows[0]) if rows else None

    def load_states(self, user_ids: Iterable[str]) -> dict[str, UserState]:
        out: dict[str, UserState] = {}
        for chunk in _chunks(list(user_ids)):
            marks = ", ".join("?" * len(chunk))
            for row in self._query(
                f"SELECT {_STATE_COLS} FROM user_states WHERE user_id IN ({marks})", chunk
            ):
                try:
                    state = codec.row_to_state(row)
                except StateCorruptionError:
                    continue  # left out: load_state of that user alone raises it
                out[state.user_id] = state
        return out

    def known_users(self, user_ids: Iterable[str]) -> set[str]:
        return set(self.state_versions(user_ids))

    def state_versions(self, user_ids: Iterable[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        for chunk in _chunks(list(user_ids)):
            marks = ", ".join("?" * len(chunk))
            sql = f"SELECT user_id, version FROM user_states WHERE user_id IN ({marks})"
            found.update(self._query(sql, chunk))
        return found

    def existing_keys(self, keys: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        # One query per chunk of pairs, whatever the users: the pairs as a VALUES table joined
        # on the (user, key) and (user, content) indexes (a row-value IN would scan the table).
        pairs = list(dict.fromkeys(keys))
        found: set[tuple[str, str]] = set()
        for start in range(0, len(pairs), _PAIRS):
            chunk = pairs[start : start + _PAIRS]
            values = ", ".join(["(?, ?)"] * len(chunk))
            flat = [v for pair in chunk for v in pair]
            rows = self._query(
                f"SELECT r.user_id, r.key FROM (VALUES {values}) AS w JOIN readings r "
                "ON r.user_id = w.column1 AND r.key = w.column2 UNION ALL "
                f"SELECT r.user_id, r.content_key FROM (VALUES {values}) AS w JOIN readings r "
                "ON r.user_id = w.column1 AND r.content_key = w.column2",
                flat + flat,
            )
            found.update((u, k) for u, k in rows)
        return found

    def history(self, user_id: str) -> list[HistoryRow]:
        rows = self._query(
            f"SELECT {_READING_COLS}, seq FROM readings WHERE user_id = ? ORDER BY ts, seq",
            (user_id,),
        )
        out = []
        for row in rows:
            m, r = codec.row_to_reading(row[:-1])
            out.append(HistoryRow(m, r, row[-1]))
        return out

    def stored_reading(self, user_id: str, reading_id: str) -> HistoryRow | None:
        rows = self._query(
            f"SELECT {_READING_COLS}, seq FROM readings WHERE user_id = ? AND key = ?",
            (user_id, reading_id),
        )
        if not rows:
            return None
        m, r = codec.row_to_reading(rows[0][:-1])
        return HistoryRow(m, r, rows[0][-1])

    def accepted_between(
        self, user_id: str, start: datetime, end: datetime
    ) -> list[tuple[datetime, float]]:
        rows = self._query(
            "SELECT ts, weight_kg - offset_kg FROM readings "
            "WHERE user_id = ? AND ts >= ? AND ts < ? AND verdict = 'accepted' ORDER BY ts, seq",
            (user_id, to_micros(start), to_micros(end)),
        )
        return [(from_micros(t), w) for t, w in rows]

    def nearest_accepted(
        self, user_id: str, when: datetime
    ) -> tuple[tuple[datetime, float] | None, tuple[datetime, float] | None]:
        t = to_micros(when)
        before = self._query(
            "SELECT ts, weight_kg - offset_kg FROM readings WHERE user_id = ? AND ts <= ? "
            "AND verdict = 'accepted' ORDER BY ts DESC, seq DESC LIMIT 1",
            (user_id, t),
        )
        after = self._query(
            "SELECT ts, weight_kg - offset_kg FROM readings WHERE user_id = ? AND ts > ? "
            "AND verdict = 'accepted' ORDER BY ts, seq LIMIT 1",
            (user_id, t),
        )
        return (
            (from_micros(before[0][0]), before[0][1]) if before else None,
            (from_micros(after[0][0]), after[0][1]) if after else None,
        )

    def last_good(self, user_id: str) -> tuple[UserState, datetime] | None:
        rows = self._query(
            f"SELECT {_STATE_COLS}, taken_at FROM last_good_states WHERE user_id = ?", (user_id,)
        )
        if not rows:
            return None
        taken_at = rows[0][-1]
        if type(taken_at) is not int or not _MIN_US <= taken_at <= _MAX_US:
            return None  # a snapshot that does not decode is no last-known-good state
        try:
            return codec.row_to_state(rows[0][:-1]), from_micros(taken_at)
        except StateCorruptionError:
            return None

    def position(self, input_id: str) -> int:
        rows = self._query("SELECT position FROM input_positions WHERE input_id = ?", (input_id,))
        return int(rows[0][0]) if rows else 0

    def _results_of(self, columns: str, input_id: str, *head: Any) -> sqlite3.Cursor:
        """``columns`` of the input's results (``results_full``), by row; ``head``: values
        bound before the input's (``?`` among the columns).

        The input's number is looked up first and bound as a number. With the look-up as a
        subquery in the WHERE clause, SQLite does not push the condition into the view's two
        arms: it read every stored result and, for each reading row, every earlier span (an
        input of a million rows took 92 s to count, and the cost grew with the square of the
        input). Bound, each arm searches its index: the input's results, and the input's
        spans, each a range of reading rows by seq.
        """
        found = self._conn.execute(
            "SELECT ref FROM inputs WHERE input_id = ?", (input_id,)
        ).fetchone()
        ref = None if found is None else found[0]  # no such input: no rows
        return self._conn.execute(
            f"SELECT {columns} FROM results_full WHERE input_ref = ? ORDER BY row", (*head, ref)
        )

    def results_for_input(self, input_id: str) -> Iterator[Result]:
        try:
            cur = self._results_of(f"?, {_RESULT_STORED}", input_id, input_id)
            for row in cur:
                yield codec.row_to_result(row)
        except sqlite3.Error as exc:
            raise typed(exc) from None

    def iter_result_rows(self, input_id: str) -> Iterator[tuple[Any, ...]]:
        """The input's results as results-file rows, by row (the ``ResultRows`` fast path).

        Absent texts come back as ``""`` from SQL and floats as stored, so only the time needs
        converting; no ``Result`` is built.
        """
        iso = codec.iso
        try:
            cur = self._results_of(FILE_CELLS, input_id)
            if FILE_TIMES == (6,):  # the usual shape, without a per-row loop over columns
                for row in cur:
                    yield (*row[:6], iso(row[6]), *row[7:])
            else:
                for cells in cur:
                    row = list(cells)
                    for k in FILE_TIMES:
                        row[k] = iso(row[k])
                    yield tuple(row)
        except sqlite3.Error as exc:
            raise typed(exc) from None

    def result_frames(self, input_id: str, rows: int) -> Iterator[pl.DataFrame]:
        """The input's results as frames of ``rows`` rows, by row (the ``ResultFrames`` path).

        A resumed run's results file is formatted from these column-wise: fetching the rows
        is what is left of its cost per row.
        """
        import polars as pl

        # Each column as the results table holds it (a time: UTC microseconds).
        kinds = {Kind.TEXT: pl.String, Kind.REAL: pl.Float64}
        schema = {c.name: kinds.get(c.kind, pl.Int64) for c in RESULTS.file_columns}
        try:
            cur = self._results_of(", ".join(schema), input_id)
            while chunk := cur.fetchmany(rows):
                yield pl.DataFrame(chunk, schema=schema, orient="row")
        except sqlite3.Error as exc:
            raise typed(exc) from None

    def audits(self, user_id: str | None = None, outcome: str | None = None) -> list[ResetAudit]:
        sql = f"SELECT {_AUDIT_COLS} FROM reset_audit WHERE 1 = 1"
        params: list[Any] = []
        if user_id is not None:
            sql += " AND user_id = ?"
            params.append(user_id)
        if outcome is not None:
            sql += " AND (outcome = ? OR fallback = ?)"
            params += [outcome, outcome]
        return [codec.row_to_audit(r) for r in self._query(sql + " ORDER BY id", params)]

    def recovery_attempts(self, user_id: str | None = None) -> list[RecoveryAttempt]:
        sql = f"SELECT {_RECOVERY_COLS} FROM recovery_attempts"
        params: tuple[Any, ...] = ()
        if user_id is not None:
            sql += " WHERE user_id = ?"
            params = (user_id,)
        return [codec.row_to_recovery(r) for r in self._query(sql + " ORDER BY id", params)]

    def users(self) -> list[str]:
        return [u for (u,) in self._query("SELECT user_id FROM user_states ORDER BY user_id")]

    def integrity_check(self) -> str:
        """``PRAGMA integrity_check``: ``'ok'`` for a sound file."""
        return str(self._query("PRAGMA integrity_check")[0][0])

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.close()
        with suppress(sqlite3.Error):
            self._conn.close()
        if self._gate is not None:
            self._gate.close()

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def connection(self) -> sqlite3.Connection:
        """The raw connection, for tests and maintenance (never for writes)."""
        return self._conn


#: Rows an insert statement takes at a time (:func:`_insert_flat`).
_ROWS_PER_INSERT = 50
_MARK = re.compile(r"\?(\d+)")


def _flat(parts: tuple[Iterator[tuple[Any, ...]], ...]) -> Iterator[Any]:
    """The values of rows whose pieces come from ``parts`` (aligned), row after row."""
    return chain.from_iterable(chain.from_iterable(zip(*parts, strict=True)))


def _insert_flat(
    c: sqlite3.Connection, insert: str, values: Iterator[Any], rows: int, width: int
) -> None:
    """Insert ``rows`` rows of ``width`` values each, taken in order from ``values``, by
    ``insert`` (one row, parameters ``?N``), :data:`_ROWS_PER_INSERT` rows a statement.

    Measured on a group's reading rows: 16% less time than one row a statement, the
    statement's per-row overhead in the sqlite3 module and in SQLite spread over 50 rows.
    """
    whole = rows - rows % _ROWS_PER_INSERT
    if whole:
        size = _ROWS_PER_INSERT * width
        statements = (tuple(islice(values, size)) for _ in range(whole // _ROWS_PER_INSERT))
        c.executemany(_many_rows(insert, _ROWS_PER_INSERT), statements)
    if whole < rows:
        c.executemany(insert, [tuple(islice(values, width)) for _ in range(rows - whole)])


@lru_cache(maxsize=64)
def _many_rows(insert: str, count: int) -> str:
    """``insert`` (one row, ``?N`` parameters) made to insert ``count`` rows at once."""
    head, _, values = insert.partition(" VALUES ")
    width = max(int(n) for n in _MARK.findall(values))
    copies = [_MARK.sub(_shifted(k * width), values) for k in range(count)]
    return f"{head} VALUES {', '.join(copies)}"


def _shifted(by: int) -> Callable[[re.Match[str]], str]:
    return lambda m: f"?{int(m.group(1)) + by}"


def _chunks(items: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]
