"""Processing a whole export file: order, group commit, resume, results file.

1. The file's identity is the SHA-256 of its bytes; its committed position (how many rows of
   the processing order are done) lives in the store.
2. Rows are parsed and validated block by block; the processing order is: invalid rows by line
   number, then the valid readings partition by partition, each partition by (user, event
   time, content, line) (:mod:`weightstream.ingest.partitions`: a user's partition is a stable
   hash of its id, and a file's partitions depend on its size alone). Exports come grouped by
   user and source and newest first; a Kalman filter must see each user's readings in time
   order. A file of more than ``processing.in_memory_rows`` rows is kept in temporary files,
   and only one partition is in memory at a time.
3. Readings go through :class:`~weightstream.processor.Batch` in groups of
   ``processing.commit_group_size``; each group commits its states, results, audit records
   and the new position in ONE transaction. A crash loses at most the uncommitted group, and a
   rerun resumes at the committed position and gives the same results. A group that meets a
   concurrent writer (busy, conflict) is redone from fresh state, a bounded number of times.
4. The results file (one row per input row, in input order) is written after the last group,
   to a temporary file renamed into place: old or new, never torn. A first run writes what it
   decided (:class:`~weightstream.engine.results.ResultsSpill` puts the rows back in input
   order, in memory or through temporary files); a resumed run writes the store's results for
   the input, put in row order the same way. A store that offers
   :class:`~weightstream.store.base.ResultRows` hands out ready rows (no ``Result`` objects
   are built for a million rows); any other store is read as ``Result`` values.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import polars as pl

from weightstream.clock import SYSTEM_CLOCK, Clock
from weightstream.config import Config, ProcessingConfig
from weightstream.engine.content_keys import CONTENT, frame_content_keys
from weightstream.engine.group import EngineConfig, GroupReadings, run_group
from weightstream.engine.results import (
    RESULT_FIELDS,
    ResultsSpill,
    ResultsTable,
    invalid_message,
    result_counts,
    results_frame,
    results_lines,
)
from weightstream.errors import ConflictError, StorageError, StoreBusyError
from weightstream.faults import NO_FAULTS, FaultPoints
from weightstream.heap import long_lived_heap
from weightstream.ingest import RowProblem, file_digest
from weightstream.ingest.partitions import read_order
from weightstream.model import Result, Verdict
from weightstream.observe import Observer
from weightstream.processor import Batch, Processor
from weightstream.results_file import csv_lines, write_atomic
from weightstream.store.base import ResultFrames, ResultRows, StateStore
from weightstream.store.columns import RESULTS, Kind

__all__ = ["RunSummary", "process_file", "write_results", "RESULT_FIELDS"]

_RETRIES = 8
#: Results counted (and formatted) at a time: one pass of polars over many commit groups,
#: and a few MB of text (formatting holds several copies of it at once).
_SLICE_ROWS = 20_000
#: Rows of results :func:`write_results` holds in memory by default (the setting's default).
_MEMORY_ROWS: int = ProcessingConfig.model_fields["in_memory_rows"].default
#: Where the cells a summary counts stand in a results-file row (found by name, so a column
#: added to the file moves nothing).
_COUNTED = tuple(
    RESULT_FIELDS.index(name)
    for name in ("user_id", "verdict", "reason", "reset_type", "reset_outcome")
)


@dataclass
class RunSummary:
    """What a run did (counts over every row of the input, including earlier runs' rows)."""

    input_id: str
    rows: int = 0
    processed_now: int = 0
    resumed_from: int = 0
    verdicts: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    invalid: Counter[str] = field(default_factory=Counter)
    resets: Counter[str] = field(default_factory=Counter)
    reset_outcomes: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    retries: int = 0
    user_ids: set[str] = field(default_factory=set, repr=False)
    #: Users counted by the caller, who then collects no ids (a file's processing order keeps
    #: each user's readings together, so it counts users without holding them); None: the
    #: users are counted here from the rows' user ids.
    user_count: int | None = None
    #: Seconds spent on each part of the run: parse, sort (the partitions read back and
    #: sorted), filter (deciding, each group's columns and content keys included), store
    #: (committing), results (the results table, its lines, the results file).
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def users(self) -> int:
        return len(self.user_ids) if self.user_count is None else self.user_count

    def count_row(self, row: tuple[object, ...]) -> None:
        """Count one results-file row (:data:`RESULT_FIELDS` order) into the summary."""
        user_id, verdict, reason, reset_type, reset_outcome = (row[k] for k in _COUNTED)
        self.rows += 1
        self.verdicts[str(verdict)] += 1
        if verdict == Verdict.REJECTED:
            self.rejected[str(reason)] += 1
        elif verdict == Verdict.INVALID:
            self.invalid[str(reason)] += 1
        if reset_type:
            self.resets[str(reset_type)] += 1
        if reset_outcome:
            self.reset_outcomes[str(reset_outcome)] += 1
        if user_id and self.user_count is None:
            self.user_ids.add(str(user_id))

    def count_table(self, table: ResultsTable, frame: pl.DataFrame) -> None:
        """Count a whole run's results (the table of every row) into the summary."""
        self.count_results(frame)

    def count_results(self, frame: pl.DataFrame) -> None:
        """Count rows of results (:meth:`ResultsTable.frame`'s columns) into the summary."""
        counts = result_counts(frame)
        self.rows += frame.height
        self.verdicts.update(counts["verdicts"])
        self.rejected.update(counts["rejected"])
        self.invalid.update(counts["invalid"])
        self.resets.update(counts["reset_type"])
        self.reset_outcomes.update(counts["reset_outcome"])
        if self.user_count is None:
            self.user_ids.update(frame.get_column("user_id").drop_nulls().unique().to_list())
            self.user_ids.discard("")

    def add_counts(self, other: RunSummary) -> None:
        """Add the rows another summary counted, of other users (a bucket's: two buckets
        never share a user), to this one. Its users are added as a count: no ids are held."""
        self.rows += other.rows
        self.verdicts.update(other.verdicts)
        self.rejected.update(other.rejected)
        self.invalid.update(other.invalid)
        self.resets.update(other.resets)
        self.reset_outcomes.update(other.reset_outcomes)
        self.user_count = self.users + other.users
        self.user_ids.clear()

    def users_counted(self) -> None:
        """Keep this summary's users as a count, with no ids (to ship it light)."""
        self.user_count = self.users
        self.user_ids.clear()

    def as_dict(self) -> dict[str, object]:
        return {
            "input_id": self.input_id,
            "rows": self.rows,
            "processed_now": self.processed_now,
            "resumed_from": self.resumed_from,
            "accepted": self.verdicts["accepted"],
            "rejected": self.verdicts["rejected"],
            "invalid": self.verdicts["invalid"],
            "duplicate": self.verdicts["duplicate"],
            "late": self.verdicts["late"],
            "rejected_by_reason": dict(self.rejected),
            "invalid_by_reason": dict(self.invalid),
            "resets_by_type": dict(self.resets),
            "reset_outcomes": dict(self.reset_outcomes),
            "users": self.users,
            "seconds": round(self.seconds, 3),
            "retries": self.retries,
        }


@dataclass
class Loaded:
    """Rows in memory, in processing order: invalid rows by line, then valid readings sorted
    by :data:`~weightstream.ingest.partitions.ORDER_KEY` (a chunk of a bucket, as a worker of
    the bucket engines decides it; :func:`process_file` reads a file by partition instead)."""

    invalid: list[tuple[int, RowProblem]]
    valid: pl.DataFrame
    table: ResultsTable = field(init=False)

    def __post_init__(self) -> None:
        self.table = ResultsTable(self.invalid, self.valid)

    def __len__(self) -> int:
        return len(self.invalid) + self.valid.height


def cut(
    invalid: list[tuple[int, RowProblem]], start: int, end: int
) -> tuple[list[tuple[int, RowProblem]], int, int]:
    """Positions ``start .. end-1`` of a processing order of ``invalid`` rows then readings:
    the invalid rows among them, and the first and end index of the readings among them."""
    n = len(invalid)
    return (invalid[start:end] if start < n else []), max(start, n) - n, max(end, n) - n


def _invalid_result(line: int, problem: RowProblem) -> Result:
    return Result(
        reading_id=None,
        user_id=None,
        verdict=Verdict.INVALID,
        reason=problem.reason,
        message=invalid_message(line, problem),
        row=line,
    )


def process_file(
    path: str | Path,
    store: StateStore,
    config: Config,
    *,
    out: str | Path | None = None,
    column_map: Mapping[str, str] | None = None,
    clock: Clock = SYSTEM_CLOCK,
    observer: Observer | None = None,
    processor: Processor | None = None,
    progress: Callable[[int, int], None] | None = None,
    raw: bool = False,
    faults: FaultPoints | None = None,
) -> RunSummary:
    """Process ``path`` into ``store``; write the results CSV to ``out``. Resumable.

    ``faults``: crash points and chaos (:mod:`weightstream.faults`) for this run and the
    processor built for it; by default ``processor``'s, else none.
    """
    started = time.perf_counter()
    path = Path(path)
    input_id = file_digest(path)
    summary = RunSummary(input_id=input_id, user_count=0)
    timings = summary.timings
    memory_rows = config.processing.in_memory_rows
    order = read_order(
        path, config, now=clock.now(), column_map=column_map, memory_rows=memory_rows
    )
    timings["parse"] = time.perf_counter() - started
    order.timings = timings
    results = _Results(summary, None if out is None else ResultsSpill(memory_rows, raw=raw))
    try:
        if processor is None:
            processor = Processor(
                store, config, clock=clock, observer=observer, faults=faults or NO_FAULTS
            )
        faults = faults or processor.faults
        engine = EngineConfig(processor)
        position = store.position(input_id)
        if not position:
            _refuse_bucket_run(store, input_id)
        summary.resumed_from = position
        total = len(order)
        # Numba's kernel is loaded: what is alive now lives as long as the run.
        with long_lived_heap(config.processing.gc_young):
            for group in order.groups(position, config.processing.commit_group_size):
                # The split covers the whole run: a group's columns and content keys are the
                # filter's input, its results gathered and formatted the results file's.
                read = time.perf_counter()
                valid = (
                    _readings(group.valid, 0, group.valid.height) if group.valid.height else None
                )
                _add_time(timings, "filter", time.perf_counter() - read)
                table = ResultsTable(group.invalid, group.valid)
                unit = _Unit(group.invalid, valid, table, 0, (input_id, group.end))
                _commit_unit(processor, engine, input_id, unit, summary, faults, clock)
                summary.processed_now += group.end - group.start
                if not position:
                    gathered = time.perf_counter()
                    results.add(table)
                    _add_time(timings, "results", time.perf_counter() - gathered)
                faults.crash_point("pipeline.group_committed")
                if progress is not None:
                    progress(group.end, total)
        summary.user_count = order.users
        order.close()
        written = time.perf_counter()
        # A first run writes the results file from what it decided; a resumed one from the
        # store, which alone holds the rows an earlier run committed.
        target = None if out is None else Path(out)
        if position:
            write_results(
                store, input_id, target, summary=summary, raw=raw, memory_rows=memory_rows
            )
        else:
            results.finish(target)
    finally:
        order.close()
        results.close()
    if out is not None:
        faults.crash_point("pipeline.results_written")
    _add_time(timings, "results", time.perf_counter() - written)
    summary.seconds = time.perf_counter() - started
    return summary


def _add_time(timings: dict[str, float], part: str, seconds: float) -> None:
    timings[part] = timings.get(part, 0.0) + seconds


def _refuse_bucket_run(store: StateStore, input_id: str) -> None:
    """Refuse to start an input that a bucket engine (``--engine processes`` or ``dask``)
    has started: this process does not know its buckets' positions, and would judge their
    committed readings duplicates."""
    from weightstream.distributed import BUCKETS, bucket_position_id

    if any(store.position(bucket_position_id(input_id, b)) for b in range(BUCKETS)):
        raise StorageError(
            "this input was started by --engine processes or --engine dask and is not "
            "finished: resume it with the same engine"
        )


class _Results:
    """A first run's results: counted into the summary and, with a results file, spilled.

    Groups' tables are gathered until they hold :data:`_SLICE_ROWS` rows, then made into one
    frame (:func:`~weightstream.engine.results.results_frame`), counted and formatted in one
    pass of polars: a group of a few thousand rows would spend more time on the calls than
    on the rows.
    """

    def __init__(self, summary: RunSummary, spill: ResultsSpill | None) -> None:
        self.summary = summary
        self.spill = spill
        self.pending: list[ResultsTable] = []
        self.rows = 0

    def add(self, table: ResultsTable) -> None:
        """A committed group's results (its table, filled)."""
        self.pending.append(table)
        self.rows += len(table.filled)
        if self.rows >= _SLICE_ROWS:
            self._flush()

    def finish(self, out: Path | None) -> None:
        """Count what is left; write the results file (atomically) to ``out``."""
        self._flush()
        if out is not None and self.spill is not None:
            write_atomic(out, self.spill.write)

    def close(self) -> None:
        self.pending.clear()
        if self.spill is not None:
            self.spill.close()

    def _flush(self) -> None:
        if not self.pending:
            return
        frame = results_frame(self.pending)
        self.pending, self.rows = [], 0
        self.summary.count_results(frame)
        if self.spill is not None:
            self.spill.add_results(frame)


@dataclass
class _Unit:
    """One commit group: its invalid rows, its readings, the table slot of its first row and
    the input position it commits."""

    invalid: list[tuple[int, RowProblem]]
    valid: GroupReadings | None
    table: ResultsTable
    slot: int
    position: tuple[str, int]


def _commit_group(
    processor: Processor,
    engine: EngineConfig,
    input_id: str,
    entries: Loaded,
    span: tuple[int, int],
    summary: RunSummary,
    faults: FaultPoints,
    clock: Clock,
    position_id: str | None = None,
    base: int = 0,
) -> None:
    """Decide and commit rows ``span`` of ``entries`` as one unit, redone on a conflict.

    The unit's position is stored under ``position_id`` (default: the input's own id); the
    bucket engines run each user bucket of an input under a position of its own. ``base``:
    the position of ``entries``' first row (a chunk of a bucket), added to the one stored.
    """
    start, end = span
    invalid, first, last = cut(entries.invalid, start, end)
    valid = _readings(entries.valid, first, last) if last > first else None
    unit = _Unit(invalid, valid, entries.table, start, (position_id or input_id, base + end))
    _commit_unit(processor, engine, input_id, unit, summary, faults, clock)


def _commit_unit(
    processor: Processor,
    engine: EngineConfig,
    input_id: str,
    unit: _Unit,
    summary: RunSummary,
    faults: FaultPoints,
    clock: Clock,
) -> None:
    """Decide and commit one unit; its results fill its table's slots once committed."""
    invalid, valid, table = unit.invalid, unit.valid, unit.table
    first_valid = unit.slot + len(invalid)
    timings = summary.timings
    for attempt in range(_RETRIES + 1):
        batch = Batch(processor, input_id)
        try:
            decided = time.perf_counter()
            for line, problem in invalid:
                batch.add_result(_invalid_result(line, problem))
            if valid is not None:
                run_group(processor, batch, valid, engine, table, first_valid)
            # Results decided one by one (invalid rows, resets, late readings): their slots.
            slots = {line: unit.slot + k for k, (line, _) in enumerate(invalid)}
            if valid is not None:
                slots.update((line, first_valid + k) for k, line in enumerate(valid.line))
            decided_one_by_one = [(slots[r.row], r) for _, r in batch.unit.results if r.row]
            batch.after_commit(table.fill_results, decided_one_by_one)
            faults.crash_point("pipeline.before_commit")
            committed = time.perf_counter()
            _add_time(timings, "filter", committed - decided)
            batch.commit(position=unit.position)
            _add_time(timings, "store", time.perf_counter() - committed)
            # Readings come user by user: a user of this group comes back only if it is the
            # last one. Keeping no other state bounds memory by the group, not the file.
            if valid is not None:
                processor.forget_all_but(valid.user[-1])
            return
        except (ConflictError, StoreBusyError):
            processor.forget()
            if attempt == _RETRIES:
                raise
            summary.retries += 1
            clock.sleep(min(0.05 * 2**attempt, 1.0))


def _readings(valid: pl.DataFrame, first: int, last: int) -> GroupReadings:
    """Rows ``first .. last-1`` of the sorted readings, as plain columns."""
    part = valid.slice(first, last - first)
    return GroupReadings(
        line=part.get_column("line").to_list(),
        ident=part.get_column("id").to_list(),
        user=part.get_column("user").to_list(),
        ts=part.get_column("ts").to_list(),
        value=part.get_column("value").to_list(),
        unit=part.get_column("unit").to_list(),
        weight_kg=part.get_column("weight_kg").to_list(),
        source=part.get_column("source").to_list(),
        contents=(
            part.get_column(CONTENT).to_list()
            if CONTENT in part.columns  # made for the whole partition (with_content_keys)
            else frame_content_keys(part)
        ),
    )


def write_results(
    store: StateStore,
    input_id: str,
    out: Path | None,
    *,
    summary: RunSummary | None = None,
    raw: bool = False,
    memory_rows: int = _MEMORY_ROWS,
) -> int:
    """Write the input's stored results as CSV (see :mod:`weightstream.results_file`).

    Atomic (temp file + fsync + rename), text cells a spreadsheet would run as formulas
    neutralised unless ``raw``. The rows are put in row order here, whatever order the store
    gives them in, holding at most ``memory_rows`` of them (the rest in temporary files).
    With ``summary``, each result is also counted into it (one pass over the results); with
    no ``out``, they are only counted. Returns the number of rows.
    """
    rows = 0
    if isinstance(store, ResultFrames):
        # Column-wise: counted and formatted with polars, as a first run's results are.
        with ResultsSpill(memory_rows, raw=raw) as spill:
            for frame in store.result_frames(input_id, _SLICE_ROWS):
                rows += frame.height
                if summary is not None:
                    summary.count_results(frame)
                if out is not None:
                    spill.add_lines(results_lines(frame, raw))
            return rows if out is None else write_atomic(Path(out), spill.write)
    with ResultsSpill(memory_rows, raw=raw) as spill:
        batch: list[tuple[object, ...]] = []
        for row in _result_rows(store, input_id):
            rows += 1
            if summary is not None:
                summary.count_row(row)
            if out is None:
                continue
            batch.append(row)
            if len(batch) >= _SLICE_ROWS:
                spill.add_lines(_lines(batch, raw))
                batch.clear()
        if out is None:
            return rows
        if batch:
            spill.add_lines(_lines(batch, raw))
        return write_atomic(Path(out), spill.write)


def _lines(rows: list[tuple[object, ...]], raw: bool) -> pl.DataFrame:
    """Results-file rows as ``(row, line)``: the lines ``csv.writer`` writes, without ends."""
    lines = [line[:-2] for line in csv_lines(RESULT_FIELDS, rows, raw=raw)]
    numbers = [row[0] for row in rows]
    return pl.DataFrame(
        {"row": pl.Series(numbers, dtype=pl.Int64), "line": pl.Series(lines, dtype=pl.String)}
    )


def _result_rows(store: StateStore, input_id: str) -> Iterator[tuple[object, ...]]:
    """The input's results as results-file rows: straight from the store if it can."""
    if isinstance(store, ResultRows):
        return store.iter_result_rows(input_id)
    return (_result_row(r) for r in store.results_for_input(input_id))


def _cell(value: object, kind: Kind) -> object:
    """A result's value as the results file shows it (absent: ``""``)."""
    if value is None:
        return ""
    if kind is Kind.REAL:
        return repr(value)
    if kind is Kind.TIME:
        return value.isoformat() if isinstance(value, datetime) else value
    return value if kind is Kind.INTEGER else str(value)


#: (Result attribute, kind) of each results-file column: the file's names are the Result's.
_FILE_CELLS = tuple((c.file or c.name, c.kind) for c in RESULTS.file_columns)


def _result_row(r: Result) -> tuple[object, ...]:
    return tuple(_cell(getattr(r, name), kind) for name, kind in _FILE_CELLS)
