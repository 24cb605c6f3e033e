"""One column table per record kind: the single statement of what each stored record holds.

Every fact about a stored record's columns is read from here: the codec's row order
(:mod:`weightstream.store.codec`), the SQLite store's inserts, updates and selects, the
results file's header and its cells (``Column.file``), and the DDL a new table would get
(:meth:`Table.ddl`). Adding a column is one line in a table below plus a migration that
adds it to existing files.

The migrations in :mod:`weightstream.store.schema` are history: each one is the literal SQL
that was run, and must not change once released (a file migrated last year ran that text).
So they are not generated from these tables; instead ``tests/store/test_columns.py`` checks
that the tables a fresh file gets from the migrations have exactly these columns, in this
order, with these types, and that a column added to a copy of a table flows through the DDL,
the insert, the select and the results-file header.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

__all__ = [
    "Kind",
    "Column",
    "Table",
    "STATES",
    "LAST_GOOD",
    "READINGS",
    "RESULTS",
    "AUDITS",
    "RECOVERIES",
    "READING_DECIDED",
    "FILE_CELLS",
    "RESULT_FROM_READING",
    "RESULT_DECIDED_IN_READING",
    "FILE_TIMES",
]


class Kind(StrEnum):
    """What a column holds, and so its SQL type and how the results file shows it."""

    TEXT = "TEXT"
    REAL = "REAL"
    INTEGER = "INTEGER"
    TIME = "TIME"  # UTC microseconds since the epoch, an INTEGER; ISO text in the results file
    REF = "REF"  # an INTEGER reference to another table (the record carries the text it names)

    @property
    def sql(self) -> str:
        return {"TIME": "INTEGER", "REF": "INTEGER"}.get(self.value, self.value)


@dataclass(frozen=True, slots=True)
class Column:
    """One stored column.

    ``sql`` is the rest of the declaration after the type (``NOT NULL``, a ``CHECK``, a
    ``REFERENCES``); ``file`` the column's name in the results file, or None when the file
    does not show it.
    """

    name: str
    kind: Kind
    sql: str = ""
    file: str | None = None

    @property
    def declaration(self) -> str:
        return " ".join(part for part in (self.name, self.kind.sql, self.sql) if part)


@dataclass(frozen=True, slots=True)
class Table:
    """A stored record kind: its table, its row key, its columns in record order."""

    name: str
    columns: tuple[Column, ...]
    #: The row key declared before the columns (None: the first column is the key).
    key: str | None = "id INTEGER PRIMARY KEY"
    #: Table constraints after the columns (UNIQUE, CHECK).
    constraints: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        """The record's columns, in the order of the codec's rows."""
        return tuple(c.name for c in self.columns)

    @property
    def file_columns(self) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if c.file is not None)

    @property
    def file_fields(self) -> tuple[str, ...]:
        """The results file's header."""
        return tuple(c.file for c in self.columns if c.file is not None)

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    def index(self, name: str) -> int:
        return self.names.index(name)

    def ddl(self, name: str | None = None) -> str:
        """``CREATE TABLE`` for a new table of this record kind."""
        parts = [*([self.key] if self.key else []), *(c.declaration for c in self.columns)]
        parts += self.constraints
        body = ",\n    ".join(parts)
        return f"CREATE TABLE {name or self.name} (\n    {body}\n)"

    def column_list(self, names: tuple[str, ...] | None = None) -> str:
        return ", ".join(names if names is not None else self.names)

    def insert(self, names: tuple[str, ...] | None = None, verb: str = "INSERT") -> str:
        """``INSERT INTO table (columns) VALUES (?, ...)`` over ``names`` (default: all)."""
        chosen = names if names is not None else self.names
        marks = ", ".join("?" * len(chosen))
        return f"{verb} INTO {self.name} ({', '.join(chosen)}) VALUES ({marks})"

    def assignments(self, names: tuple[str, ...]) -> str:
        """``a = ?, b = ?`` for an UPDATE."""
        return ", ".join(f"{n} = ?" for n in names)

    def with_column(self, column: Column, after: str | None = None) -> Table:
        """A copy with ``column`` added (after ``after``, or last): for tests and migrations."""
        cols = list(self.columns)
        at = len(cols) if after is None else self.index(after) + 1
        cols.insert(at, column)
        return replace(self, columns=tuple(cols))


_T, _R, _I, _TIME, _REF = Kind.TEXT, Kind.REAL, Kind.INTEGER, Kind.TIME, Kind.REF


def _state_columns() -> tuple[Column, ...]:
    return (
        Column("user_id", _T, "PRIMARY KEY"),
        Column("version", _I, "NOT NULL CHECK (version >= 1)"),
        Column("has_kalman", _I, "NOT NULL CHECK (has_kalman IN (0, 1))"),
        Column("x0", _R),
        Column("x1", _R),
        Column("p00", _R),
        Column("p01", _R),
        Column("p10", _R),
        Column("p11", _R),
        Column("kalman_ts", _TIME),
        Column("adapting", _I, "NOT NULL CHECK (adapting IN (0, 1))"),
        Column("adapt_start", _TIME),
        Column("adapt_factor", _R, "NOT NULL CHECK (adapt_factor >= 1 AND adapt_factor <= 100)"),
        Column("adapt_n", _I, "NOT NULL CHECK (adapt_n >= 0)"),
        Column("adapt_type", _T),
        Column("buffer", _T, "NOT NULL"),
        Column("rejected", _T, "NOT NULL"),
        Column("last_accepted", _TIME),
        Column("last_event", _TIME),
        Column("last_reset", _TIME),
        Column("last_reset_type", _T),
        Column("accepted_count", _I, "NOT NULL CHECK (accepted_count >= 0)"),
    )


#: The stored state stays consistent even if a bug upstream tried otherwise (SQLite turns NaN
#: into NULL, hence the ``IS NOT NULL``): the validator's most important checks, repeated.
_STATE_CHECK = """CHECK (has_kalman = 0 OR (
        x0 IS NOT NULL AND x1 IS NOT NULL AND p00 IS NOT NULL AND p01 IS NOT NULL
        AND p10 IS NOT NULL AND p11 IS NOT NULL AND kalman_ts IS NOT NULL
        AND x0 > 0 AND p00 > 0 AND p11 > 0 AND p01 = p10 AND p00 * p11 - p01 * p10 > 0))"""

#: A user's state (:class:`~weightstream.model.UserState`), one row per user.
STATES = Table("user_states", _state_columns(), key=None, constraints=(_STATE_CHECK,))

#: A user's last-known-good state and when it was taken.
LAST_GOOD = Table(
    "last_good_states",
    (*_state_columns(), Column("taken_at", _TIME, "NOT NULL")),
    key=None,
    constraints=(_STATE_CHECK,),
)

#: A stored reading (the history) with its current result.
READINGS = Table(
    "readings",
    (
        Column("key", _T, "NOT NULL"),
        Column("content_key", _T, "NOT NULL"),
        Column("user_id", _T, "NOT NULL"),
        Column("ts", _TIME, "NOT NULL"),
        Column("value", _R, "NOT NULL"),
        Column("unit", _T, "NOT NULL"),
        Column("weight_kg", _R, "NOT NULL CHECK (weight_kg > 0)"),
        Column("source", _T, "NOT NULL"),
        Column("verdict", _T, "NOT NULL"),
        Column("reason", _T, "NOT NULL"),
        Column("message", _T, "NOT NULL"),
        Column("filtered_weight", _R),
        Column("trend_kg_week", _R),
        Column("std_kg", _R),
        Column("reset_type", _T),
        Column("reset_outcome", _T),
        Column("quality", _R),
        # The offset subtracted before the filter saw it (weight_kg is the reading as given),
        # so a replay decides exactly as live did (migration 4; 0 for older readings).
        Column("offset_kg", _R, "NOT NULL DEFAULT 0"),
    ),
    key="seq INTEGER PRIMARY KEY",
)

#: The result of one input row (or of one reading given to the library or the service).
#: The record carries the input's id text where the table keeps ``inputs.ref``.
RESULTS = Table(
    "results",
    (
        Column("input_ref", _REF, "REFERENCES inputs (ref)"),
        Column("row", _I, file="row"),
        Column("reading_id", _T, file="reading_id"),
        Column("user_id", _T, file="user_id"),
        Column("verdict", _T, "NOT NULL", file="verdict"),
        Column("reason", _T, "NOT NULL", file="reason"),
        Column("message", _T, "NOT NULL", file="message"),
        Column("ts", _TIME, file="timestamp"),
        Column("source", _T, file="source"),
        Column("weight_kg", _R, file="weight_kg"),
        Column("filtered_weight", _R, file="filtered_weight"),
        Column("trend_kg_week", _R, file="trend_kg_week"),
        Column("std_kg", _R, file="std_kg"),
        Column("reset_type", _T, file="reset_type"),
        Column("reset_outcome", _T, file="reset_outcome"),
        Column("quality", _R, file="quality"),
        Column("q_innovation", _R),
        Column("q_rate", _R),
        Column("q_source", _R),
        Column("quality_components", _T),
        # Last, so the results file's other columns keep their places (migration 4). NULL
        # (an empty cell) when the reading has no offset and none are configured.
        Column("offset_kg", _R, file="offset_kg"),
    ),
    constraints=("UNIQUE (input_ref, row)",),
)

#: One reset transaction's audit record.
AUDITS = Table(
    "reset_audit",
    (
        Column("user_id", _T, "NOT NULL"),
        Column("reading_id", _T, "NOT NULL"),
        Column("reset_type", _T, "NOT NULL"),
        Column("trigger", _T, "NOT NULL"),
        Column("outcome", _T, "NOT NULL"),
        Column("failed_operation", _T),
        Column("reason", _T),
        Column("duration_s", _R, "NOT NULL"),
        Column("at", _TIME, "NOT NULL"),
        Column("fallback", _T),
        Column("checkpoints", _T, "NOT NULL"),
    ),
)

#: One attempt of the recovery service.
RECOVERIES = Table(
    "recovery_attempts",
    (
        Column("user_id", _T, "NOT NULL"),
        Column("reading_id", _T, "NOT NULL"),
        Column("strategy", _T, "NOT NULL"),
        Column("succeeded", _I, "NOT NULL"),
        Column("detail", _T, "NOT NULL"),
        Column("at", _TIME, "NOT NULL"),
    ),
)

#: The result columns that only repeat the reading's identity (result column -> reading
#: column). They never change once stored (a replay changes a reading's decision, from the
#: verdict on, never these), so a store may keep them once, in the reading's row, and link
#: the result to it (SQLite does, migration 5).
RESULT_FROM_READING = {
    "reading_id": "key",
    "user_id": "user_id",
    "ts": "ts",
    "source": "source",
    "weight_kg": "weight_kg",
}

#: The result columns that a stored reading's row holds as its result was decided (result
#: column = reading column). SQLite leaves them out of a linked result's row (migration 6,
#: ``verdict IS NULL``) and reads them from the reading's; before a replay changes the
#: reading's decision, the store copies them into the results linked to it, so an earlier
#: input's results keep what was decided for them.
RESULT_DECIDED_IN_READING = (
    "verdict",
    "reason",
    "message",
    "filtered_weight",
    "trend_kg_week",
    "std_kg",
    "reset_type",
    "reset_outcome",
    "quality",
)

#: The result columns a store may keep in a stored reading's row besides the reading's own,
#: for the result the reading got from the input that stored it (result column -> row column):
#: with :data:`RESULT_FROM_READING` and :data:`RESULT_DECIDED_IN_READING`, the whole result.
#: SQLite does (migration 8, with ``input_ref``), so nearly every result of a file is no row
#: of its own.
RESULT_KEPT_WITH_READING = {
    "row": "row",
    "q_innovation": "q_innovation",
    "q_rate": "q_rate",
    "q_source": "q_source",
    "quality_components": "quality_components",
    "offset_kg": "result_offset_kg",
}

#: What replaying a late reading may change in a stored reading: its result, from the verdict on.
READING_DECIDED = READINGS.names[READINGS.index("verdict") :]
#: The results file's cells as SQL selects them from ``results``: absent texts as ``''``; a
#: time comes back as its integer (the stores turn the columns :data:`FILE_TIMES` into text).
FILE_CELLS = ", ".join(
    f"coalesce({c.name}, '')" if c.kind is Kind.TEXT else c.name for c in RESULTS.file_columns
)
#: Positions of the time columns among the results file's cells.
FILE_TIMES = tuple(k for k, c in enumerate(RESULTS.file_columns) if c.kind is Kind.TIME)
