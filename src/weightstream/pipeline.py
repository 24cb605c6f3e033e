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
   last group, to a temporary file renamed into place: old or new, never torn.
"""

from __future__ import annotations

import csv
import os
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from weightstream import faults
from weightstream.clock import SYSTEM_CLOCK, Clock
from weightstream.config import Config
from weightstream.errors import ConflictError, StoreBusyError
from weightstream.ingest import MalformedRow, RowProblem, file_digest, open_csv, to_measurement
from weightstream.model import Measurement, Result, Verdict, to_micros
from weightstream.observe import Observer
from weightstream.processor import Batch, Processor
from weightstream.store.base import StateStore

__all__ = ["RunSummary", "process_file", "write_results", "RESULT_FIELDS"]

RESULT_FIELDS = (
    "row", "reading_id", "user_id", "verdict", "reason", "message", "timestamp", "source",
    "weight_kg", "filtered_weight", "trend_kg_week", "std_kg", "reset_type", "reset_outcome",
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
        self.rows += 1
        self.verdicts[r.verdict.value] += 1
        if r.verdict is Verdict.REJECTED:
            self.rejected[r.reason] += 1
        elif r.verdict is Verdict.INVALID:
            self.invalid[r.reason] += 1
        if r.reset_type is not None:
            self.resets[r.reset_type.value] += 1
        if r.reset_outcome is not None:
            self.reset_outcomes[r.reset_outcome.value] += 1
        if r.user_id:
            self.user_ids.add(r.user_id)

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


Entry = tuple[int, Measurement | None, RowProblem | None]


def _load(path: Path, config: Config, column_map: Mapping[str, str] | None, clock: Clock) -> list[Entry]:
    """Parse every row; return them in processing order."""
    source = open_csv(path, column_map)
    now = clock.now()
    invalid: list[Entry] = []
    valid: list[tuple[str, int, int, Measurement]] = []
    for raw in source:
        if isinstance(raw, MalformedRow):
            invalid.append((raw.line, None, raw.problem))
            continue
        item = to_measurement(raw, config=config, now=now)
        if isinstance(item, RowProblem):
            invalid.append((raw.line, None, item))
        else:
            valid.append((item.user_id, to_micros(item.timestamp), raw.line, item))
    valid.sort(key=lambda t: (t[0], t[1], t[2]))
    return invalid + [(line, m, None) for _, _, line, m in valid]


def _invalid_result(line: int, problem: RowProblem) -> Result:
    return Result(
        reading_id=None, user_id=None, verdict=Verdict.INVALID, reason=str(problem.reason),
        message=f"line {line}: {problem.field}: {problem.message}", row=line,
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
        for r in store.results_for_input(input_id):
            summary.count(r)
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
    for attempt in range(_RETRIES + 1):
        batch = Batch(processor, input_id)
        try:
            batch.prefetch(m for _, m, _ in entries[start:end] if m is not None)
            for line, m, problem in entries[start:end]:
                if m is None:
                    assert problem is not None
                    batch.add_result(_invalid_result(line, problem))
                else:
                    batch.process(m, row=line)
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
    store: StateStore, input_id: str, out: Path, *, summary: RunSummary | None = None
) -> int:
    """Write the input's stored results as CSV (temp file + fsync + rename). Returns rows.

    With ``summary``, each result is also counted into it (one pass over the results).
    """
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    count = 0
    try:
        with tmp.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(RESULT_FIELDS)
            for r in store.results_for_input(input_id):
                writer.writerow(_result_row(r))
                count += 1
                if summary is not None:
                    summary.count(r)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(out.parent if str(out.parent) else ".", os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return count


def _fmt(value: float | None) -> str:
    return "" if value is None else repr(value)


def _result_row(r: Result) -> list[object]:
    return [
        r.row, r.reading_id or "", r.user_id or "", str(r.verdict), r.reason, r.message,
        r.timestamp.isoformat() if r.timestamp else "", r.source or "", _fmt(r.weight_kg),
        _fmt(r.filtered_weight), _fmt(r.trend_kg_week), _fmt(r.std_kg),
        r.reset_type or "", r.reset_outcome or "", _fmt(r.quality),
    ]


