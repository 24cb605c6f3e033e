"""The results of one input, held as columns, and their results file written column-wise.

A file run fills a :class:`ResultsTable`: one slot per row of the input, in processing order
(invalid rows first, then the valid readings as sorted). What the input already says (row,
user, time, source, weight, id) is read from the sorted readings at the end; the table holds
only what was decided: verdict, reason, message, the filter's numbers, the reset, the
offset subtracted (none, an empty cell, when no offsets are configured). The
compiled loop fills whole stretches from its output arrays; a result decided one by one (a
reset, a late reading, an invalid row) fills its own slot. Slots are filled once their group
is committed, so the table says what the store says. A resumed run takes the rows an earlier
run committed from the store (:meth:`ResultsTable.fill_result` on each stored result).

:func:`results_lines` formats the results file, which :class:`ResultsSpill` writes in input
order. Its text is the text
``csv.writer`` gives for the same rows (``tests/engine/test_results_table.py`` holds the two
writers together): minimal quoting, CRLF line ends, floats as ``repr`` writes them (polars
formats them, and Python only the few whose ``repr`` is in exponent form), times as
``datetime.isoformat``, and text cells neutralised against spreadsheet formulas unless raw.
Written with polars, not by hand, because formatting a million rows cell by cell in Python
was a quarter of a run.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from itertools import chain
from pathlib import Path
from typing import Any, BinaryIO, Final

import numpy as np
import polars as pl

from weightstream.engine.line_runs import LineRuns
from weightstream.ingest import RowProblem
from weightstream.model import Result
from weightstream.results_file import FORMULA_PREFIXES, NUMERIC_FIELDS
from weightstream.store.columns import RESULTS

__all__ = [
    "ResultsSpill",
    "ResultsTable",
    "float_text",
    "float_texts",
    "RESULT_FIELDS",
    "invalid_message",
    "result_counts",
    "results_frame",
    "results_lines",
]

#: The results file's columns (the result table's columns that the file shows).
RESULT_FIELDS = RESULTS.file_fields
_NUMBERS = ("filtered_weight", "trend_kg_week", "std_kg", "quality", "offset_kg")
_DECIDED = ("verdict", "reason", "message", "reset_type", "reset_outcome")
_SLICE = 100_000  # rows formatted at a time
#: Text columns of few distinct values, tested a value at a time (see :func:`_cells`).
_FEW_VALUES: Final = frozenset({"source", *_DECIDED})
#: A cell that starts with one of results_file.FORMULA_PREFIXES, as a pattern.
_FORMULA: Final = "^[" + "".join(f"\\x{ord(c):02x}" for c in FORMULA_PREFIXES) + "]"
_SPECIAL: Final = r'[,"\r\n]'  # what makes csv.writer quote a cell


def invalid_message(line: int, problem: RowProblem) -> str:
    """The message of an invalid row's result."""
    return f"line {line}: {problem.field}: {problem.message}"


class ResultsTable:
    """One slot per input row, in processing order; see the module docstring."""

    def __init__(self, invalid: Sequence[tuple[int, RowProblem]], valid: pl.DataFrame) -> None:
        self.invalid_rows = [line for line, _ in invalid]
        self.valid = valid
        self.offset = len(invalid)
        size = self.offset + valid.height
        self.filled = np.zeros(size, dtype=np.bool_)
        self.numbers = {name: np.full(size, np.nan) for name in _NUMBERS}
        self.decided: dict[str, list[str | None]] = {name: [None] * size for name in _DECIDED}
        # The reading id of a valid reading without an id of its own (its content key).
        self.content_ids: dict[int, str] = {}

    # -- filling ----------------------------------------------------------------------------

    def fill_stretch(self, start: int, columns: dict[str, Any]) -> None:
        """Fill slots ``start ..`` from decided columns (lists or arrays of equal length)."""
        end = start + len(columns["verdict"])
        for name in _NUMBERS:
            if name in columns:
                self.numbers[name][start:end] = columns[name]
        for name in _DECIDED:
            if name in columns:
                self.decided[name][start:end] = columns[name]
        self.filled[start:end] = True

    def fill_result(self, position: int, r: Result) -> None:
        """Fill one slot from a result decided one by one (or read back from the store)."""
        for name in _NUMBERS:
            value = getattr(r, name)
            self.numbers[name][position] = np.nan if value is None else value
        self.decided["verdict"][position] = str(r.verdict)
        self.decided["reason"][position] = str(r.reason)
        self.decided["message"][position] = r.message
        self.decided["reset_type"][position] = None if r.reset_type is None else str(r.reset_type)
        outcome = r.reset_outcome
        self.decided["reset_outcome"][position] = None if outcome is None else str(outcome)
        self.filled[position] = True

    def fill_results(self, items: Sequence[tuple[int, Result]]) -> None:
        """Fill the slots of results decided one by one: (slot, result) pairs."""
        for position, r in items:
            self.fill_result(position, r)

    @property
    def complete(self) -> bool:
        return bool(self.filled.all())

    # -- reading ----------------------------------------------------------------------------

    def frame(self) -> pl.DataFrame:
        """Every row's result, typed, in input (row) order."""
        return results_frame([self]).sort("row")


def results_frame(tables: Sequence[ResultsTable]) -> pl.DataFrame:
    """The results of every row of ``tables``, typed, in no useful order: each table's
    invalid rows, then each one's valid readings.

    One frame for many groups' tables: made a group at a time, the frames of groups of 2,000
    rows spent more time on polars' calls than on the rows.
    """
    valid = [t.valid for t in tables if t.valid.height]
    v = pl.concat(valid, how="vertical", rechunk=False) if valid else tables[0].valid
    ids = v.get_column("id")
    at: list[int] = []
    own: list[str] = []
    base = 0
    for t in tables:
        at += [base + p - t.offset for p in t.content_ids]
        own += t.content_ids.values()
        base += t.valid.height
    if at:
        ids = ids.scatter(at, own)
    inputs = pl.DataFrame(
        {
            "row": v.get_column("line"),
            "reading_id": ids,
            "user_id": v.get_column("user"),
            "ts": v.get_column("ts"),
            "source": v.get_column("source"),
            "weight_kg": v.get_column("weight_kg"),
        }
    )
    invalid_rows = list(chain.from_iterable(t.invalid_rows for t in tables))
    none = [None] * len(invalid_rows)
    invalid = pl.DataFrame(
        {
            "row": pl.Series(invalid_rows, dtype=pl.Int64),
            "reading_id": pl.Series(none, dtype=pl.String),
            "user_id": pl.Series(none, dtype=pl.String),
            "ts": pl.Series(none, dtype=pl.Int64),
            "source": pl.Series(none, dtype=pl.String),
            "weight_kg": pl.Series(none, dtype=pl.Float64),
        }
    )
    # A table's slots are its invalid rows, then its valid readings: gathered in that order.
    decided: dict[str, Any] = {}
    for name in _NUMBERS:
        parts = [t.numbers[name][: t.offset] for t in tables]
        parts += [t.numbers[name][t.offset :] for t in tables]
        decided[name] = pl.Series(name, np.concatenate(parts)).fill_nan(None)
    for name in _DECIDED:
        texts = list(chain.from_iterable(t.decided[name][: t.offset] for t in tables))
        texts += chain.from_iterable(t.decided[name][t.offset :] for t in tables)
        decided[name] = pl.Series(name, texts, dtype=pl.String)
    both = pl.concat([invalid, inputs], how="vertical")
    return pl.concat([both, pl.DataFrame(decided)], how="horizontal")


def results_lines(f: pl.DataFrame, raw: bool) -> pl.DataFrame:
    """The results-file line of each row of ``f`` (:meth:`ResultsTable.frame`'s columns).

    Columns ``row`` and ``line`` (the text, without its line end), in ``f``'s order.
    """
    return f.select(pl.col("row"), pl.concat_str(_cells(f, raw), separator=",").alias("line"))


class ResultsSpill:
    """Results-file lines in any order in, in row order out: an external sort by row.

    A run decides its rows partition by partition, so their results come in no useful order.
    Each group's results are formatted as they come (:func:`results_lines`, the table's own
    cells) and kept in :class:`~weightstream.engine.line_runs.LineRuns` (in memory up to
    ``memory_rows``, else as sorted runs on disk); :meth:`write` merges them one range of
    :data:`RANGE_ROWS` rows at a time. A row number is unique, so a range never holds more
    than :data:`RANGE_ROWS` lines, whatever the file.
    """

    #: Rows of the file per range: what :meth:`write` holds at once (~5 MB of text). Writing
    #: 2 M spilled lines of ~210 bytes held 29 MB more at its peak with ranges of 50,000 rows,
    #: 18-23 MB with 25,000 (the slice written at a time made no difference); a file run's
    #: peak is its results file's.
    RANGE_ROWS: Final = 25_000

    def __init__(self, memory_rows: int, *, raw: bool, directory: Path | None = None) -> None:
        self.raw = raw
        self.lines = LineRuns(memory_rows, self.RANGE_ROWS, directory)
        self.rows = 0

    def add_results(self, f: pl.DataFrame) -> None:
        """Rows of results (:meth:`ResultsTable.frame`'s columns), in any order."""
        for start in range(0, f.height, _SLICE):
            self.add_lines(results_lines(f.slice(start, _SLICE), self.raw))

    def add_lines(self, lines: pl.DataFrame) -> None:
        """Ready lines: columns ``row`` and ``line`` (without its line end)."""
        self.rows += lines.height
        self.lines.add(lines)

    def write(self, handle: BinaryIO) -> int:
        """Write the header and every line, by row, to ``handle``; the lines are dropped."""
        handle.write(_HEADER)
        self.lines.write(handle)
        return self.rows

    def close(self) -> None:
        self.lines.close()

    def __enter__(self) -> ResultsSpill:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_HEADER: Final = (",".join(RESULT_FIELDS) + "\r\n").encode("utf-8")


def result_counts(f: pl.DataFrame) -> dict[str, Counter[str]]:
    """Of rows of results (:meth:`ResultsTable.frame`'s columns): verdicts, reasons of
    rejected and invalid rows, resets by type and by outcome."""
    out: dict[str, Counter[str]] = {"verdicts": _count(f.get_column("verdict"))}
    for verdict in ("rejected", "invalid"):
        out[verdict] = _count(f.filter(pl.col("verdict") == verdict).get_column("reason"))
    for name in ("reset_type", "reset_outcome"):
        out[name] = _count(f.get_column(name))
    return out


def _cells(f: pl.DataFrame, raw: bool) -> list[pl.Expr]:
    """The results-file cells of ``f``'s rows, as ``csv.writer`` would write them.

    The cells this module formats (row, time, numbers) never need quoting or neutralising.
    A column of few distinct values (a verdict, a reason, a source) is tested once per
    value, and its cells only when a value needs it: the per-cell tests were half of the
    formatting's time.
    """
    cells: list[pl.Expr] = []
    numbers = float_texts(f, ("weight_kg", *_NUMBERS))
    for name in RESULT_FIELDS:
        if name == "row":
            cells.append(pl.col("row").cast(pl.String).alias(name))
            continue
        if name == "timestamp":
            cells.append(_iso(pl.col("ts")).alias(name))
            continue
        if name in numbers:
            cells.append(numbers[name].alias(name))
            continue
        expr = pl.col(name).fill_null("")
        neutralise, quote = name not in NUMERIC_FIELDS and not raw, True
        if name in _FEW_VALUES:
            values = f.get_column(name).drop_nulls().unique()
            neutralise = neutralise and bool(values.str.contains(_FORMULA).any())
            quote = bool(values.str.contains(_SPECIAL).any())
        if neutralise:
            expr = pl.when(expr.str.contains(_FORMULA)).then("'" + expr).otherwise(expr)
        cells.append((_quoted(expr) if quote else expr).alias(name))
    return cells


def _count(col: pl.Series) -> Counter[str]:
    col = col.drop_nulls()
    col = col.filter(col != "")
    return Counter({str(k): int(n) for k, n in col.value_counts().iter_rows()})


def _iso(ts: pl.Expr) -> pl.Expr:
    """``datetime.isoformat`` of aware UTC instants: microseconds only when not zero."""
    whole = pl.from_epoch(ts, time_unit="us").dt.strftime("%Y-%m-%dT%H:%M:%S")
    fraction = (ts % 1_000_000).cast(pl.String).str.zfill(6)
    text = (
        pl.when(ts % 1_000_000 == 0)
        .then(whole + "+00:00")
        .otherwise(whole + "." + fraction + "+00:00")
    )
    return pl.when(ts.is_null()).then(pl.lit("")).otherwise(text)


def float_text(values: pl.Series) -> pl.Expr:
    """``repr`` of each float ('' for none): polars' shortest text, Python's for exponents."""
    text = values.cast(pl.String)
    odd = values.to_frame("v").select(_odd(pl.col("v"))).to_series()
    if odd.any():
        fixed = [repr(v) for v in values.filter(odd).to_list()]
        text = text.scatter(odd.arg_true(), fixed)
    return pl.lit(text.fill_null(""))


def _quoted(expr: pl.Expr) -> pl.Expr:
    """Minimal quoting, as ``csv.writer``: a cell with a comma, quote or line end is quoted."""
    return (
        pl.when(expr.str.contains(_SPECIAL))
        .then('"' + expr.str.replace_all('"', '""', literal=True) + '"')
        .otherwise(expr)
    )


def float_texts(f: pl.DataFrame, names: Sequence[str]) -> dict[str, pl.Expr]:
    """:func:`float_text` of columns ``names`` of ``f``, by name.

    One polars call asks which columns hold a value whose text is Python's own (an exponent,
    or not finite); the others are cast by an expression of the caller's select. Made column
    by column, each column's eight calls cost more than its rows (slices of 20,000 rows).
    """
    odd = f.select(_odd(pl.col(name)).any().alias(name) for name in names).row(0)
    return {
        name: float_text(f.get_column(name)) if some else pl.col(name).cast(pl.String).fill_null("")
        for name, some in zip(names, odd, strict=True)
    }


def _odd(values: pl.Expr) -> pl.Expr:
    """Whether a float's ``repr`` is not polars' text: an exponent (below 1e-4 but not
    zero, or from 1e16), or a value that is not finite; false for none."""
    magnitude = values.abs()
    odd = ((magnitude < 1e-4) & (values != 0.0)) | (magnitude >= 1e16) | ~values.is_finite()
    return odd.fill_null(False)
