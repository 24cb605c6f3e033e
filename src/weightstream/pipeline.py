"""Processing a whole export file: order, group commit, resume, results file.

1. The file's identity is the SHA-256 of its bytes; its committed position (how many rows of
   the processing order are done) lives in the store.
2. Rows are parsed and validated; the processing order is: invalid rows by line number, then
   valid readings by (user, event time, line). Exports come grouped by user and source and
   newest first; a Kalman filter must see each user's readings in time order.
3. Readings go through :class:`~weightstream.processor.Batch` in groups of
   ``processing.commit_group_size``; each group commits its states, results, audit records
   and the new position in ONE transaction. A crash loses at most the uncommitted group, and a
   rerun resumes at the committed position and gives the same results. A group that meets a
   concurrent writer (busy, conflict) is redone from fresh state, a bounded number of times.
4. The results file (one row per input row, in input order) is written from the store after the
   last group, to a temporary file renamed into place: old or new, never torn. A store that
   offers :class:`~weightstream.store.base.ResultRows` hands out ready rows (no ``Result``
   objects are built for a million rows); any other store is read as ``Result`` values.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from weightstream import faults
from weightstream.clock import SYSTEM_CLOCK, Clock
from weightstream.config import Config
from weightstream.errors import ConflictError, StoreBusyError
from weightstream.ingest import MalformedRow, RowProblem, file_digest, open_csv
from weightstream.ingest.rows import measurement_of, parse_row
from weightstream.model import Measurement, Result, Verdict
from weightstream.observe import Observer
from weightstream.processor import Batch, Processor
from weightstream.results_file import write_csv
from weightstream.store.base import ResultRows, StateStore

__all__ = ["RunSummary", "process_file", "write_results", "RESULT_FIELDS"]

RESULT_FIELDS = (
    "row",
    "reading_id",
    "user_id",
    "verdict",
    "reason",
    "message",
    "timestamp",
    "source",
    "weight_kg",
    "filtered_weight",
    "trend_kg_week",
    "std_kg",
    "reset_type",
    "reset_outcome",
    "quality",
)
_RETRIES = 8


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

    @property
    def users(self) -> int:
        return len(self.user_ids)

    def count(self, r: Result) -> None:
        """Count one stored result into the summary."""
        self.count_row(_result_row(r))

    def count_row(self, row: tuple[object, ...]) -> None:
        """Count one results-file row (:data:`RESULT_FIELDS` order) into the summary."""
        _, _, user_id, verdict, reason, *_, reset_type, reset_outcome, _ = row
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
        if user_id:
            self.user_ids.add(str(user_id))

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


# One row of the processing order, compact while the whole file is held (a million rows must
# fit well under 500 MB): an invalid row as (line, problem); a valid one as one flat tuple,
# (line, *parsed fields), its user, unit and source strings shared. Its Measurement (and
# content hash) is built only when its group is processed.
Invalid = tuple[int, RowProblem]
Valid = tuple[int, str | None, str, datetime, float, str, float, str]
Entry = Invalid | Valid


def _load(
    path: Path, config: Config, column_map: Mapping[str, str] | None, clock: Clock
) -> list[Entry]:
    """Parse every row; return them in processing order."""
    source = open_csv(path, column_map)
    now = clock.now()
    invalid: list[Entry] = []
    valid: list[Valid] = []
    strings: dict[str, str] = {}
    share = strings.setdefault
    for raw in source:
        if isinstance(raw, MalformedRow):
            invalid.append((raw.line, raw.problem))
            continue
        item = parse_row(raw, config=config, now=now)
        if isinstance(item, RowProblem):
            invalid.append((raw.line, item))
        else:
            ident, user, when, value, unit, weight_kg, src = item
            valid.append(
                (
                    raw.line,
                    ident,
                    share(user, user),
                    when,
                    value,
                    share(unit, unit),
                    weight_kg,
                    share(src, src),
                )
            )
    # Order by user, event time, then content (source, unit, value, id), the processing order
    # of weightstream.model.order_key: readings at the same instant never depend on where
    # they stand in the file. ``valid`` is in line order and the sort is stable, so rows that
    # tie on everything (the same reading twice) keep line order.
    valid.sort(key=_processing_order)
    invalid.extend(valid)
    return invalid


def _processing_order(v: Valid) -> tuple[str, datetime, str, str, float, str]:
    _, ident, user, when, value, unit, _, src = v
    return (user, when, src, unit, value, ident or "")


def _invalid_result(line: int, problem: RowProblem) -> Result:
    return Result(
        reading_id=None,
        user_id=None,
        verdict=Verdict.INVALID,
        reason=problem.reason,
        message=f"line {line}: {problem.field}: {problem.message}",
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
) -> RunSummary:
    """Process ``path`` into ``store``; write the results CSV to ``out``. Resumable."""
    started = time.perf_counter()
    path = Path(path)
    input_id = file_digest(path)
    entries = _load(path, config, column_map, clock)
    processor = processor or Processor(store, config, clock=clock, observer=observer)
    summary = RunSummary(input_id=input_id)
    position = store.position(input_id)
    summary.resumed_from = position
    group = config.processing.commit_group_size
    total = len(entries)
    while position < total:
        end = min(position + group, total)
        _commit_group(processor, input_id, entries, position, end, summary)
        summary.processed_now += end - position
        position = end
        faults.crash_point("pipeline.group_committed")
        if progress is not None:
            progress(position, total)
    if out is not None:
        write_results(store, input_id, Path(out), summary=summary)
        faults.crash_point("pipeline.results_written")
    else:
        for row in _result_rows(store, input_id):
            summary.count_row(row)
    summary.seconds = time.perf_counter() - started
    return summary


def _commit_group(
    processor: Processor,
    input_id: str,
    entries: list[Entry],
    start: int,
    end: int,
    summary: RunSummary,
) -> None:
    group: list[tuple[int, Measurement | RowProblem]] = [
        entry if len(entry) == 2 else (entry[0], measurement_of(entry[1:]))
        for entry in entries[start:end]
    ]
    for attempt in range(_RETRIES + 1):
        batch = Batch(processor, input_id)
        try:
            batch.prefetch(m for _, m in group if isinstance(m, Measurement))
            for line, item in group:
                if isinstance(item, RowProblem):
                    batch.add_result(_invalid_result(line, item))
                else:
                    batch.process(item, row=line)
            faults.crash_point("pipeline.before_commit")
            batch.commit(position=(input_id, end))
            return
        except (ConflictError, StoreBusyError):
            processor.forget()
            if attempt == _RETRIES:
                raise
            summary.retries += 1
            time.sleep(min(0.05 * 2**attempt, 1.0))


def write_results(
    store: StateStore,
    input_id: str,
    out: Path,
    *,
    summary: RunSummary | None = None,
    raw: bool = False,
) -> int:
    """Write the input's stored results as CSV (see :mod:`weightstream.results_file`).

    Atomic (temp file + fsync + rename), text cells a spreadsheet would run as formulas
    neutralised unless ``raw``. With ``summary``, each result is also counted into it (one
    pass over the results). Returns the number of rows.
    """
    on_row = None if summary is None else summary.count_row
    return write_csv(out, RESULT_FIELDS, _result_rows(store, input_id), raw=raw, on_row=on_row)


def _result_rows(store: StateStore, input_id: str) -> Iterator[tuple[object, ...]]:
    """The input's results as results-file rows: straight from the store if it can."""
    if isinstance(store, ResultRows):
        return store.iter_result_rows(input_id)
    return (_result_row(r) for r in store.results_for_input(input_id))


def _fmt(value: float | None) -> str:
    return "" if value is None else repr(value)


def _result_row(r: Result) -> tuple[object, ...]:
    return (
        r.row,
        r.reading_id or "",
        r.user_id or "",
        str(r.verdict),
        r.reason,
        r.message,
        r.timestamp.isoformat() if r.timestamp else "",
        r.source or "",
        _fmt(r.weight_kg),
        _fmt(r.filtered_weight),
        _fmt(r.trend_kg_week),
        _fmt(r.std_kg),
        r.reset_type or "",
        r.reset_outcome or "",
        _fmt(r.quality),
    )
