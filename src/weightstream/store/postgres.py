"""The shared store: PostgreSQL through psycopg 3 and a ``psycopg_pool`` connection pool.

The same :class:`~weightstream.store.base.StateStore` contract as the SQLite store, for several
ingest workers on several machines:

* **Schema.** Every table is declared from :mod:`weightstream.store.columns` (TEXT, DOUBLE
  PRECISION, BIGINT; identity keys) and created by PostgreSQL's own ordered migrations
  (:mod:`weightstream.store.pg_schema`), each in its own transaction with the row recording
  it in ``schema_migrations``. Migrations run
  under a transaction-scoped advisory lock, so two workers starting at once never race: the
  second waits, reads the table again and finds the work done.
* **One unit, one transaction.** :meth:`PostgresStore.commit` writes the whole
  :class:`~weightstream.store.base.UnitOfWork` between one ``BEGIN`` and one ``COMMIT``
  (``COPY`` for readings and results, ``executemany`` for the rest), or nothing.
* **Per-user serialisation.** The transaction first locks the state rows of the unit's known
  users (``SELECT ... FOR UPDATE``, in user order, so two units never deadlock on them) and
  checks each stored version against the one the unit was computed on; a moved version is a
  :class:`~weightstream.errors.ConflictError` and the caller redoes the unit from fresh state.
  A fresh user's row is inserted under its primary key: a second worker creating the same
  user waits, then fails the same way.
* **Idempotency keys** are unique indexes on ``(user_id, key)`` and ``(user_id, content_key)``:
  a reading stored twice, by a retry or by a second worker, is a conflict, never a second row.
* **Durability** (I9): ``fsync``, ``synchronous_commit`` and ``full_page_writes`` are read back
  at open and required, as WAL + ``synchronous=FULL`` are for SQLite.
* **Typed errors**: a psycopg error becomes one of :mod:`weightstream.errors`' storage errors
  (unique violation, serialisation failure, deadlock: conflict; lock timeout: busy; disk
  full: storage full); the unit is rolled back and never carried on.

Two differences with SQLite are absorbed here so the contract suite gives identical results:
PostgreSQL text cannot hold NUL, so text cells are escaped reversibly (``\\x00`` and the escape
character itself, U+FFFF, become two-character sequences; every other text is stored as is);
and a NaN float is stored as NULL, as SQLite stores it (the codec reads NULL back as NaN, and
the state table's ``IS NOT NULL`` checks refuse it where a number is required).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import suppress
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

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
from weightstream.store.columns import (
    AUDITS,
    FILE_CELLS,
    FILE_TIMES,
    LAST_GOOD,
    READING_DECIDED,
    READINGS,
    RECOVERIES,
    RESULTS,
    STATES,
    Kind,
)
from weightstream.store.pg_schema import check_durability, migrate
from weightstream.store.pg_wire import back as _back
from weightstream.store.pg_wire import dec as _dec
from weightstream.store.pg_wire import enc as _enc
from weightstream.store.pg_wire import row as _row
from weightstream.store.pg_wire import rows as _rows
from weightstream.store.pg_wire import safe as _safe
from weightstream.store.pg_wire import typed as _typed

__all__ = ["PostgresStore", "is_dsn"]

_MIN_US = to_micros(datetime.min.replace(tzinfo=UTC))
_MAX_US = to_micros(datetime.max.replace(tzinfo=UTC))


def is_dsn(text: str) -> bool:
    """Whether ``text`` names a PostgreSQL database (a ``postgresql://`` or ``postgres://`` URL).

    >>> is_dsn("postgresql://ws@db.internal/weightstream"), is_dsn("weightstream.db")
    (True, False)
    """
    return text.startswith(("postgresql://", "postgres://"))


_STATE_COLS = STATES.column_list()
_STATE_MARKS = ", ".join(["%s"] * len(STATES.names))
_STATE_SETS = ", ".join(f"{n} = %s" for n in STATES.names[1:])
_LAST_GOOD_UPSERT = (
    f"INSERT INTO last_good_states ({LAST_GOOD.column_list()}) "
    f"VALUES ({', '.join(['%s'] * len(LAST_GOOD.names))}) ON CONFLICT (user_id) DO UPDATE SET "
    + ", ".join(f"{n} = excluded.{n}" for n in LAST_GOOD.names[1:])
)
_READING_COLS = READINGS.column_list()
_READING_UPDATE = (
    f"UPDATE readings SET {', '.join(f'{n} = %s' for n in READING_DECIDED)} "
    "WHERE user_id = %s AND key = %s"
)
_RESULT_STORED = RESULTS.column_list(RESULTS.names[1:])
# Whether a results-file row holds an escaped text (U+FFFF), told by the server.
_FILE_ESCAPED = "strpos(concat({}), chr(65535)) > 0".format(
    ", ".join(c.name for c in RESULTS.file_columns if c.kind is Kind.TEXT)
)
_INPUT_REF = "(SELECT ref FROM inputs WHERE input_id = %s)"
# The weight the filter took: the reading less the offset it was decided with (issue 13).
_FILTER_KG = "weight_kg - offset_kg"
_AUDIT_COLS = AUDITS.column_list()
_AUDIT_INSERT = (
    f"INSERT INTO reset_audit ({_AUDIT_COLS}) VALUES ({', '.join(['%s'] * len(AUDITS.names))})"
)
_RECOVERY_COLS = RECOVERIES.column_list()
_RECOVERY_INSERT = (
    f"INSERT INTO recovery_attempts ({_RECOVERY_COLS}) "
    f"VALUES ({', '.join(['%s'] * len(RECOVERIES.names))})"
)


class PostgresStore:
    """A :class:`~weightstream.store.base.StateStore` on a PostgreSQL database.

    ``dsn``: a libpq connection string or URL (``postgresql://user@host/db``); its
    ``options=-csearch_path=NAME`` selects a schema. ``pool_size`` connections at most are
    held (one is enough for a single-threaded worker; the pool replaces a broken one).
    ``lock_timeout_ms``: how long a commit waits for another worker's lock on the same user
    before :class:`StoreBusyError` (exit 75, retry).
    """

    def __init__(
        self,
        dsn: str,
        *,
        pool_size: int = 4,
        lock_timeout_ms: int = 5000,
        connect_timeout_s: float = 10.0,
        allow_unsafe_durability: bool = False,
        observer: Observer | None = None,
        clock: Clock = SYSTEM_CLOCK,
        faults: FaultPoints = NO_FAULTS,
    ) -> None:
        self.clock = clock
        self.faults = faults
        self._observer = observer or Observer()
        self._pid = os.getpid()
        self._lock_timeout_ms = int(lock_timeout_ms)
        self._pool: ConnectionPool[psycopg.Connection[tuple[Any, ...]]] = ConnectionPool(
            dsn,
            min_size=1,
            max_size=max(1, int(pool_size)),
            kwargs={"autocommit": True},
            configure=self._configure_connection,
            open=False,
            timeout=max(connect_timeout_s, self._lock_timeout_ms / 1000 + 5),
            name="weightstream",
        )
        try:
            self._pool.open(wait=True, timeout=connect_timeout_s)
        except PoolTimeout:
            self._pool.close()
            raise StoreOpenError(
                f"cannot connect to PostgreSQL at {_safe(dsn)} within {connect_timeout_s:g} s"
            ) from None
        try:
            check_durability(self._query, allow_unsafe_durability)
            migrate(self._pool, self.clock)
        except BaseException:
            self._pool.close()
            raise

    @classmethod
    def from_config(
        cls,
        config: StoreConfig,
        dsn: str | None = None,
        *,
        observer: Observer | None = None,
        clock: Clock = SYSTEM_CLOCK,
        faults: FaultPoints = NO_FAULTS,
    ) -> PostgresStore:
        """A store with the configured settings (``dsn`` overrides ``config.dsn``)."""
        chosen = dsn if dsn is not None else config.dsn
        if not chosen:
            raise StoreOpenError("no PostgreSQL DSN given (--db postgresql://... or store.dsn)")
        return cls(
            chosen,
            pool_size=config.pool_size,
            lock_timeout_ms=config.busy_timeout_ms,
            allow_unsafe_durability=config.allow_unsafe_durability,
            observer=observer,
            clock=clock,
            faults=faults,
        )

    # -- open ---------------------------------------------------------------------------

    def _configure_connection(self, conn: psycopg.Connection[Any]) -> None:
        # Shortest exact text for floats on any server version; wait for a lock this long.
        conn.execute("SET extra_float_digits = 3")
        conn.execute(f"SET lock_timeout = {self._lock_timeout_ms}")

    # -- the one write path ---------------------------------------------------------------

    def commit(self, unit: UnitOfWork) -> None:
        if os.getpid() != self._pid:
            raise StorageError("PostgreSQL pool used across fork; open a new store")
        if unit.empty:
            return
        for uid, state in unit.states.items():
            if uid not in unit.corrupt_versions:
                expected = unit.expected_versions.get(uid, state.version - 1)
                if state.version <= expected:
                    raise ConflictError("state version does not move forward", user_id=uid)
        started = time.perf_counter()
        faults = self.faults
        try:
            with self._pool.connection() as conn, conn.transaction():
                faults.crash_point("store.after_begin")
                self._write(conn, unit)
                faults.crash_point("store.before_commit")
        except psycopg.Error as exc:
            raise _typed(exc) from None
        except PoolTimeout as exc:
            raise StoreBusyError(f"no PostgreSQL connection available: {exc}") from None
        faults.crash_point("store.after_commit")
        self._observer.store_committed(time.perf_counter() - started, len(unit))

    def _lock_states(self, conn: psycopg.Connection[Any], unit: UnitOfWork) -> None:
        """Lock the unit's stored users in user order; a version that moved is a conflict."""
        known = sorted(
            uid
            for uid, state in unit.states.items()
            if uid in unit.corrupt_versions
            or unit.expected_versions.get(uid, state.version - 1) != 0
        )
        fresh = [
            uid
            for uid, state in unit.states.items()
            if uid not in unit.corrupt_versions
            and unit.expected_versions.get(uid, state.version - 1) == 0
        ]
        if known:
            rows = conn.execute(
                "SELECT user_id, version FROM user_states WHERE user_id = ANY(%s) "
                'ORDER BY user_id COLLATE "C" FOR UPDATE',
                ([_enc(u) for u in known],),
            ).fetchall()
            stored = {_dec(u): v for u, v in rows}
            for uid in known:
                if uid in unit.corrupt_versions:
                    if uid not in stored or stored[uid] != unit.corrupt_versions[uid]:
                        raise ConflictError(
                            "corrupt user state changed under its repair", user_id=uid
                        )
                    continue
                state = unit.states[uid]
                if stored.get(uid) != unit.expected_versions.get(uid, state.version - 1):
                    raise ConflictError("user state changed under this unit", user_id=uid)
        if fresh:
            row = conn.execute(
                "SELECT user_id FROM user_states WHERE user_id = ANY(%s) LIMIT 1",
                ([_enc(u) for u in fresh],),
            ).fetchone()
            if row is not None:
                raise ConflictError("user state created by another writer", user_id=_dec(row[0]))

    def _write(self, conn: psycopg.Connection[Any], unit: UnitOfWork) -> None:
        if unit.states:
            self._lock_states(conn, unit)
        cur = conn.cursor()
        readings = _rows([codec.reading_to_row(m, r) for m, r in unit.readings])
        readings += _rows(unit.reading_rows)
        if readings:
            with cur.copy(f"COPY readings ({_READING_COLS}) FROM STDIN") as copy:
                for row in readings:
                    copy.write_row(row)
        if unit.replaced_readings:
            first = READINGS.index(READING_DECIDED[0])
            params = []
            for m, r in unit.replaced_readings:
                row = _row(codec.reading_to_row(m, r))
                params.append((*row[first:], _enc(m.user_id), _enc(m.reading_id)))
            cur.executemany(_READING_UPDATE, params)
            if cur.rowcount != len(params):
                raise ConflictError("replaced reading is not stored")
        self.faults.crash_point("store.after_results")
        results = _rows([codec.result_to_row(i, r) for i, r in unit.results])
        results += _rows(unit.result_rows)
        if results:
            self._insert_results(conn, results)
        if unit.states:
            self._write_states(conn, unit)
            self.faults.crash_point("store.after_state")
        if unit.last_good:
            cur.executemany(
                _LAST_GOOD_UPSERT,
                [(*_row(codec.state_to_row(s)), to_micros(t)) for s, t in unit.last_good.values()],
            )
        if unit.audits:
            cur.executemany(_AUDIT_INSERT, [_row(codec.audit_to_row(a)) for a in unit.audits])
        if unit.recoveries:
            cur.executemany(
                _RECOVERY_INSERT, [_row(codec.recovery_to_row(a)) for a in unit.recoveries]
            )
        if unit.position is not None:
            input_id, position = unit.position
            cur.execute(
                "INSERT INTO input_positions VALUES (%s, %s, %s) ON CONFLICT (input_id) DO "
                "UPDATE SET position = excluded.position, updated_at = excluded.updated_at "
                "WHERE excluded.position >= input_positions.position",
                (_enc(input_id), position, to_micros(self.clock.now())),
            )
            if cur.rowcount != 1:
                raise ConflictError(f"input position of {input_id} moved past this unit")
            self.faults.crash_point("store.after_position")

    def _write_states(self, conn: psycopg.Connection[Any], unit: UnitOfWork) -> None:
        fresh, known, corrupt = [], [], []
        for uid, state in unit.states.items():
            row = _row(codec.state_to_row(state))
            if uid in unit.corrupt_versions:
                corrupt.append((*row[1:], _enc(uid), unit.corrupt_versions[uid]))
                continue
            expected = unit.expected_versions.get(uid, state.version - 1)
            if expected == 0:
                fresh.append(row)
            else:
                known.append((*row[1:], _enc(uid), expected))
        cur = conn.cursor()
        if fresh:
            cur.executemany(
                f"INSERT INTO user_states ({_STATE_COLS}) VALUES ({_STATE_MARKS})", fresh
            )
        if known:
            cur.executemany(
                f"UPDATE user_states SET {_STATE_SETS} WHERE user_id = %s AND version = %s",
                known,
            )
            if cur.rowcount != len(known):
                raise ConflictError(
                    f"{len(known) - cur.rowcount} user state(s) changed under this unit"
                )
        for params in corrupt:
            cur.execute(
                f"UPDATE user_states SET {_STATE_SETS} "
                "WHERE user_id = %s AND version IS NOT DISTINCT FROM %s",
                params,
            )
            if cur.rowcount != 1:
                raise ConflictError("corrupt user state changed under its repair")

    def _insert_results(self, conn: psycopg.Connection[Any], rows: list[tuple[Any, ...]]) -> None:
        """Insert result rows (codec order, cells encoded), each input's text stored once."""
        refs: dict[Any, Any] = {None: None}
        for input_id in sorted({row[0] for row in rows if row[0] is not None}):
            conn.execute(
                "INSERT INTO inputs (input_id) VALUES (%s) ON CONFLICT (input_id) DO NOTHING",
                (input_id,),
            )
            found = conn.execute(
                "SELECT ref FROM inputs WHERE input_id = %s", (input_id,)
            ).fetchone()
            refs[input_id] = None if found is None else found[0]
        with conn.cursor().copy(f"COPY results ({RESULTS.column_list()}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row((refs[row[0]], *row[1:]))

    # -- queries ------------------------------------------------------------------------

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            with self._pool.connection() as conn:
                return conn.execute(sql.encode(), tuple(params)).fetchall()
        except psycopg.Error as exc:
            raise _typed(exc) from None
        except PoolTimeout as exc:
            raise StoreBusyError(f"no PostgreSQL connection available: {exc}") from None

    def load_state(self, user_id: str) -> UserState | None:
        rows = self._query(
            f"SELECT {_STATE_COLS} FROM user_states WHERE user_id = %s", (_enc(user_id),)
        )
        return codec.row_to_state(_back(rows[0])) if rows else None

    def load_states(self, user_ids: Iterable[str]) -> dict[str, UserState]:
        wanted = [_enc(u) for u in user_ids]
        out: dict[str, UserState] = {}
        if not wanted:
            return out
        for row in self._query(
            f"SELECT {_STATE_COLS} FROM user_states WHERE user_id = ANY(%s)", (wanted,)
        ):
            try:
                state = codec.row_to_state(_back(row))
            except StateCorruptionError:
                continue  # left out: load_state of that user alone raises it
            out[state.user_id] = state
        return out

    def known_users(self, user_ids: Iterable[str]) -> set[str]:
        return set(self.state_versions(user_ids))

    def state_versions(self, user_ids: Iterable[str]) -> dict[str, int]:
        wanted = [_enc(u) for u in user_ids]
        if not wanted:
            return {}
        rows = self._query(
            "SELECT user_id, version FROM user_states WHERE user_id = ANY(%s)", (wanted,)
        )
        return {_dec(u): int(v) for u, v in rows}

    def existing_keys(self, keys: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        pairs = [(_enc(u), _enc(k)) for u, k in keys]
        if not pairs:
            return set()
        users, wanted = [u for u, _ in pairs], [k for _, k in pairs]
        rows = self._query(
            "SELECT q.u, q.k FROM unnest(%s::text[], %s::text[]) AS q(u, k) "
            "WHERE EXISTS (SELECT 1 FROM readings r WHERE r.user_id = q.u AND r.key = q.k) "
            "OR EXISTS (SELECT 1 FROM readings r WHERE r.user_id = q.u AND r.content_key = q.k)",
            (users, wanted),
        )
        return {(_dec(u), _dec(k)) for u, k in rows}

    def history(self, user_id: str) -> list[HistoryRow]:
        rows = self._query(
            f"SELECT {_READING_COLS}, seq FROM readings WHERE user_id = %s ORDER BY ts, seq",
            (_enc(user_id),),
        )
        out = []
        for row in rows:
            m, r = codec.row_to_reading(_back(row[:-1]))
            out.append(HistoryRow(m, r, row[-1]))
        return out

    def stored_reading(self, user_id: str, reading_id: str) -> HistoryRow | None:
        rows = self._query(
            f"SELECT {_READING_COLS}, seq FROM readings WHERE user_id = %s AND key = %s",
            (_enc(user_id), _enc(reading_id)),
        )
        if not rows:
            return None
        m, r = codec.row_to_reading(_back(rows[0][:-1]))
        return HistoryRow(m, r, rows[0][-1])

    def accepted_between(
        self, user_id: str, start: datetime, end: datetime
    ) -> list[tuple[datetime, float]]:
        rows = self._query(
            f"SELECT ts, {_FILTER_KG} FROM readings WHERE user_id = %s AND ts >= %s AND ts < %s "
            "AND verdict = 'accepted' ORDER BY ts, seq",
            (_enc(user_id), to_micros(start), to_micros(end)),
        )
        return [(from_micros(t), w) for t, w in rows]

    def nearest_accepted(
        self, user_id: str, when: datetime
    ) -> tuple[tuple[datetime, float] | None, tuple[datetime, float] | None]:
        t, u = to_micros(when), _enc(user_id)
        before = self._query(
            f"SELECT ts, {_FILTER_KG} FROM readings WHERE user_id = %s AND ts <= %s "
            "AND verdict = 'accepted' ORDER BY ts DESC, seq DESC LIMIT 1",
            (u, t),
        )
        after = self._query(
            f"SELECT ts, {_FILTER_KG} FROM readings WHERE user_id = %s AND ts > %s "
            "AND verdict = 'accepted' ORDER BY ts, seq LIMIT 1",
            (u, t),
        )
        return (
            (from_micros(before[0][0]), before[0][1]) if before else None,
            (from_micros(after[0][0]), after[0][1]) if after else None,
        )

    def last_good(self, user_id: str) -> tuple[UserState, datetime] | None:
        rows = self._query(
            f"SELECT {_STATE_COLS}, taken_at FROM last_good_states WHERE user_id = %s",
            (_enc(user_id),),
        )
        if not rows:
            return None
        taken_at = rows[0][-1]
        if type(taken_at) is not int or not _MIN_US <= taken_at <= _MAX_US:
            return None
        try:
            return codec.row_to_state(_back(rows[0][:-1])), from_micros(taken_at)
        except StateCorruptionError:
            return None

    def position(self, input_id: str) -> int:
        rows = self._query(
            "SELECT position FROM input_positions WHERE input_id = %s", (_enc(input_id),)
        )
        return int(rows[0][0]) if rows else 0

    def _stream(self, sql: str, params: Sequence[Any]) -> Iterator[tuple[Any, ...]]:
        """Rows of a large query through a server-side cursor, a batch at a time."""
        try:
            with (
                self._pool.connection() as conn,
                conn.transaction(),
                conn.cursor(name="weightstream_stream") as cur,
            ):
                cur.itersize = 20_000
                cur.execute(sql.encode(), tuple(params))
                yield from cur
        except psycopg.Error as exc:
            raise _typed(exc) from None
        except PoolTimeout as exc:
            raise StoreBusyError(f"no PostgreSQL connection available: {exc}") from None

    def results_for_input(self, input_id: str) -> Iterator[Result]:
        text = _enc(input_id)
        for row in self._stream(
            f"SELECT %s::text, {_RESULT_STORED} FROM results "
            f"WHERE input_ref = {_INPUT_REF} ORDER BY row",
            (text, text),
        ):
            yield codec.row_to_result(_back(row))

    def iter_result_rows(self, input_id: str) -> Iterator[tuple[Any, ...]]:
        """The input's results as results-file rows, by row (the ``ResultRows`` fast path).

        The server says which rows hold an escaped text (rare), so only those are decoded
        here; the others only have their time converted, as in the SQLite store.
        """
        iso = codec.iso
        last = len(RESULTS.file_columns)
        for cells in self._stream(
            f"SELECT {FILE_CELLS}, {_FILE_ESCAPED} FROM results "
            f"WHERE input_ref = {_INPUT_REF} ORDER BY row",
            (_enc(input_id),),
        ):
            if cells[last]:
                cells = _back(cells)
            if FILE_TIMES == (6,):  # the usual shape, without a per-row loop over columns
                yield (*cells[:6], iso(cells[6]), *cells[7:last])
            else:
                row = list(cells[:last])
                for k in FILE_TIMES:
                    row[k] = iso(row[k])
                yield tuple(row)

    def audits(self, user_id: str | None = None, outcome: str | None = None) -> list[ResetAudit]:
        sql = f"SELECT {_AUDIT_COLS} FROM reset_audit WHERE true"
        params: list[Any] = []
        if user_id is not None:
            sql += " AND user_id = %s"
            params.append(_enc(user_id))
        if outcome is not None:
            sql += " AND (outcome = %s OR fallback = %s)"
            params += [_enc(outcome), _enc(outcome)]
        rows = self._query(sql + " ORDER BY id", params)
        return [codec.row_to_audit(_back(r)) for r in rows]

    def recovery_attempts(self, user_id: str | None = None) -> list[RecoveryAttempt]:
        sql = f"SELECT {_RECOVERY_COLS} FROM recovery_attempts"
        params: tuple[Any, ...] = ()
        if user_id is not None:
            sql += " WHERE user_id = %s"
            params = (_enc(user_id),)
        rows = self._query(sql + " ORDER BY id", params)
        return [codec.row_to_recovery(_back(r)) for r in rows]

    def users(self) -> list[str]:
        # Sorted here, by code point as Python and SQLite sort, whatever the collation.
        return sorted(_dec(u) for (u,) in self._query("SELECT user_id FROM user_states"))

    def schema_versions(self) -> list[int]:
        """The migrations applied to this database, in order."""
        return [int(v) for (v,) in self._query("SELECT version FROM schema_migrations ORDER BY 1")]

    def close(self) -> None:
        with suppress(Exception):
            self._pool.close()

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
