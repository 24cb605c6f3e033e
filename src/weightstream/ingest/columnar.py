"""A whole export read column by column: the same rows, reasons and values, many times faster.

:func:`read_columns` gives, for every data line of an export, exactly what
:mod:`weightstream.ingest.csv_reader` and :func:`~weightstream.ingest.rows.parse_row` give
for it, line by line: a valid reading's fields, or the line's :class:`RowProblem`. It reads
the data in blocks of lines with polars (a C-speed CSV parser) and interprets whole columns at
once, but only where that cannot differ from the per-line rules:

* **A block** is read by polars only if it is plain: no quote, NUL, carriage return or blank
  line, valid UTF-8, the header's field count on every line, no field over the length cap
  and no repeated header. Any other block is read by the line reader
  (:meth:`CsvInput.rows_of`), which knows every malformed case.
* **A row** is interpreted here only if each field has its plain form: a user id with no
  surrounding white space that is not a null word; an ISO ``YYYY-MM-DD[ T]HH:MM:SS`` time
  (no zone; fractions of 3 or 6 digits) inside the configured range; a weight of ASCII digits
  with at most one point; a known mass unit (converted by
  :func:`~weightstream.ingest.units.conversion`, the function ``to_kg`` uses); a weight in kg
  inside the configured range. Any other row goes to :func:`parse_row`, whose verdict and
  message it then gets. Low-cardinality texts (units, sources) are interpreted once per
  distinct value by the per-line functions themselves.

The column types here (polars' decimal parser, its ISO date-time parser) are held to the
per-line path by ``tests/ingest/test_columnar.py`` on generated exports with every kind of
trouble. Written with polars rather than by hand because it is the maintained columnar CSV
reader of the field; the per-line path stays the reference.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import polars as pl

from weightstream.config import Config
from weightstream.ingest._lines import blocks, padded, plain_lines
from weightstream.ingest._problem import ASCII_WHITESPACE, NULL_TOKENS, RowProblem
from weightstream.ingest.csv_reader import MAX_FIELD_CHARS, CsvInput, open_csv, physical_lines
from weightstream.ingest.rows import UNKNOWN_SOURCE, parse_row
from weightstream.ingest.timestamps import TimestampParser
from weightstream.ingest.units import conversion
from weightstream.model import to_micros

__all__ = ["Block", "Columns", "read_blocks", "read_columns", "VALID_SCHEMA"]

#: The columns of the valid rows: line number, id (null when the row has none), user, event
#: time (UTC microseconds), value as given, unit as given (trimmed), weight in kg, source.
VALID_SCHEMA: Final = {
    "line": pl.Int64,
    "id": pl.String,
    "user": pl.String,
    "ts": pl.Int64,
    "value": pl.Float64,
    "unit": pl.String,
    "weight_kg": pl.Float64,
    "source": pl.String,
}

#: Bytes of file read at a time. A block's texts and their typed columns are held at once
#: (about 12 times its size at the peak): 2 MB read 2 M rows in less time than 8 MB did, with
#: 150 MB less peak memory.
_BLOCK_BYTES: Final = 2 << 20
# ASCII digits only: a regex \d would also match other scripts' digits.
_TS_PLAIN: Final = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[ T][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{3}|\.[0-9]{6})?$"
)
_WEIGHT_PLAIN: Final = r"^[0-9]{1,15}(\.[0-9]{1,15})?$"
#: Every spelling of a null word (:data:`NULL_TOKENS`) in any case: ``text.lower() in
#: NULL_TOKENS`` as one lookup, with no lower-casing of the column. Only ASCII letters lower
#: to the letters of these words, so no other text is one of them.
_NULL_SPELLINGS: Final = sorted(
    {
        "".join(chars)
        for token in NULL_TOKENS
        for chars in itertools.product(*({c, c.upper()} for c in token))
    }
)


@dataclass
class Columns:
    """An export read whole: valid readings as columns, every other line with its problem."""

    valid: pl.DataFrame
    invalid: list[tuple[int, RowProblem]]
    blocks_by_polars: int = 0
    blocks_by_lines: int = 0
    rows_by_polars: int = 0

    @property
    def rows(self) -> int:
        return self.valid.height + len(self.invalid)


def read_columns(
    path: str | Path,
    config: Config,
    *,
    now: datetime,
    column_map: Mapping[str, str] | None = None,
    block_bytes: int = _BLOCK_BYTES,
) -> Columns:
    """Every data line of the export at ``path``: valid rows as columns, the rest as problems."""
    frames: list[pl.DataFrame] = []
    out = Columns(pl.DataFrame(schema=VALID_SCHEMA), [])
    for block in read_blocks(path, config, now=now, column_map=column_map, block_bytes=block_bytes):
        if block.valid.height:
            frames.append(block.valid)
        out.invalid.extend(block.invalid)
        out.blocks_by_polars += block.by_polars
        out.blocks_by_lines += not block.by_polars
        out.rows_by_polars += block.rows_by_polars
    if frames:
        out.valid = pl.concat(frames, how="vertical")
    out.invalid.sort(key=lambda item: item[0])
    return out


@dataclass
class Block:
    """One block of an export's lines, read: its valid rows and its other lines' problems.

    ``invalid`` is in line order; each block's lines come after the previous block's.
    """

    valid: pl.DataFrame
    invalid: list[tuple[int, RowProblem]]
    by_polars: bool
    rows_by_polars: int


def read_blocks(
    path: str | Path,
    config: Config,
    *,
    now: datetime,
    column_map: Mapping[str, str] | None = None,
    block_bytes: int = _BLOCK_BYTES,
) -> Iterator[Block]:
    """The export at ``path`` block by block, each read as :func:`read_columns` reads it.

    For a file too large to hold whole: only one block of lines is in memory at a time.
    """
    source = open_csv(path, column_map)
    reader = _Reader(source, config, now)
    for first_line, data in blocks(Path(path), source.data_offset, block_bytes):
        invalid: list[tuple[int, RowProblem]] = []
        frame = reader.fast(data, first_line, invalid)
        by_polars = frame is not None
        rows_by_polars = 0
        if frame is None:
            frame = reader.by_lines(data, first_line, invalid)
        else:
            rows_by_polars = frame.height
            frame = reader.interpret(frame, invalid, padded=reader.padded)
        if reader.odd_valid:
            odd = pl.DataFrame(reader.odd_valid, schema=VALID_SCHEMA, orient="row")
            reader.odd_valid.clear()
            frame = pl.concat([frame, odd], how="vertical") if frame.height else odd
        invalid.sort(key=lambda item: item[0])
        yield Block(frame, invalid, by_polars, rows_by_polars)


_EMPTY_TEXTS: Final = pl.DataFrame(
    schema={
        "line": pl.Int64,
        **dict.fromkeys(("user_id", "timestamp", "weight", "unit", "source", "id"), pl.String),
    }
)


class _Reader:
    def __init__(self, source: CsvInput, config: Config, now: datetime) -> None:
        self.source = source
        self.config = config
        self.now = now
        self.width = len(source.header)
        self.idx = source.indices
        self.header_user = source.header[self.idx["user_id"]]
        self.header_weight = source.header[self.idx["weight"]]
        v = config.validation
        # The per-line parser's range: a UTC year from ``min_year`` up to now + the skew.
        self.min_ts = to_micros(datetime(v.min_year, 1, 1, tzinfo=UTC))
        self.max_ts = to_micros(TimestampParser(now=now, config=v).latest)
        self._units: dict[str, tuple[str, str, float] | None] = {}
        self.odd_valid: list[tuple[object, ...]] = []
        self._sources: dict[str, str] = {}
        #: Whether a field of the last block read by :meth:`fast` may begin or end with white
        #: space (:func:`~weightstream.ingest._lines.padded`).
        self.padded = True

    # -- a block ---------------------------------------------------------------------------

    def fast(
        self, block: bytes, first_line: int, invalid: list[tuple[int, RowProblem]]
    ) -> pl.DataFrame | None:
        """The block's lines as texts, read by polars; None if the block is not plain.

        Lines that are not plain (a quote or a NUL byte, another field count than the
        header's, blank) are taken out first and read by the line reader (they are rare, and
        their rules are the line reader's). A block with a carriage return other than in CRLF
        line ends, or that polars refuses, is left to the line reader whole.
        """
        if b"\r" in block:
            if block.count(b"\r") != block.count(b"\r\n"):
                return None
            block = block.replace(b"\r\n", b"\n")
        if not block.endswith(b"\n"):
            block += b"\n"
        numbers, odd, plain, counted = plain_lines(block, first_line, self.width)
        frame = self._texts(plain, len(numbers)) if len(numbers) else None
        if frame is None and len(numbers) and not counted:
            # Polars refused lines whose fields were only counted in total: count them line
            # by line, then polars reads the plain ones (or refuses them too).
            numbers, odd, plain, counted = plain_lines(block, first_line, self.width, count=True)
            frame = self._texts(plain, len(numbers)) if len(numbers) else None
        if frame is None and len(numbers):
            return None
        lines = len(numbers)
        self.padded = padded(plain)
        for number, line in odd:
            self._line(line, number, invalid)
        if frame is None:
            return _EMPTY_TEXTS
        names = frame.columns
        columns: dict[str, pl.Series] = {"line": pl.Series("line", numbers)}
        for field in ("user_id", "timestamp", "weight", "unit", "source", "id"):
            i = self.idx.get(field)
            columns[field] = (
                frame.get_column(names[i]).alias(field)
                if i is not None
                else pl.Series(field, [None] * lines, dtype=pl.String)
            )
        return pl.DataFrame(columns)

    def _texts(self, block: bytes, lines: int) -> pl.DataFrame | None:
        """Plain lines as texts, one column per field; None if polars refuses them.

        Polars refuses a line with more fields than the first (``truncate_ragged_lines``
        off), which :func:`~weightstream.ingest._lines.plain_lines` counts on when it
        counted fields only in total.
        """
        try:
            frame = pl.read_csv(
                io.BytesIO(block),
                has_header=False,
                infer_schema=False,
                quote_char=None,
                empty_string_is_null=False,
                encoding="utf8",
                raise_if_empty=True,
                truncate_ragged_lines=False,
            )
        except Exception:  # noqa: BLE001 - polars refuses the block: the line reader decides
            return None
        if frame.width != self.width or frame.height != lines:
            return None
        if len(block) > MAX_FIELD_CHARS:
            # A text's bytes bound its characters: most blocks need no count of characters.
            widest = frame.select(pl.all().str.len_bytes().max()).row(0)
            long = [c for c, n in zip(frame.columns, widest, strict=True) if n > MAX_FIELD_CHARS]
            chars = frame.select(pl.col(long).str.len_chars().max()).row(0) if long else (0,)
            if max(chars) > MAX_FIELD_CHARS:
                return None
        if self.header_user.encode() in block:
            user = frame.columns[self.idx["user_id"]]
            weight = frame.columns[self.idx["weight"]]
            if frame.filter(
                (pl.col(user) == self.header_user) & (pl.col(weight) == self.header_weight)
            ).height:
                return None
        return frame

    def _line(self, line: bytes, number: int, invalid: list[tuple[int, RowProblem]]) -> None:
        """One odd line through the line reader; a valid one joins the block's odd rows."""
        for raw in self.source.rows_of(
            physical_lines(io.BytesIO(line), self.source.line_cap), number
        ):
            item = parse_row(raw, config=self.config, now=self.now)
            if isinstance(item, RowProblem):
                invalid.append((raw.line, item))
            else:
                self.odd_valid.append(_row(raw.line, item))

    def by_lines(
        self, block: bytes, first_line: int, invalid: list[tuple[int, RowProblem]]
    ) -> pl.DataFrame:
        """The block read line by line, exactly as the line reader reads a file."""
        rows: list[tuple[object, ...]] = []
        lines = physical_lines(io.BytesIO(block), self.source.line_cap)
        for raw in self.source.rows_of(lines, first_line):
            item = parse_row(raw, config=self.config, now=self.now)
            if isinstance(item, RowProblem):
                invalid.append((raw.line, item))
            else:
                rows.append(_row(raw.line, item))
        return pl.DataFrame(rows, schema=VALID_SCHEMA, orient="row")

    # -- rows ------------------------------------------------------------------------------

    def interpret(
        self, frame: pl.DataFrame, invalid: list[tuple[int, RowProblem]], *, padded: bool = True
    ) -> pl.DataFrame:
        """Valid rows of a plain block as typed columns; other rows through ``parse_row``.

        One lazy plan types every column and decides every row (a pass of polars over the
        block, not one per column). Units and sources are judged once per distinct text by
        the per-line functions, then looked up by their code in the block (an enum).
        ``padded=False`` says no field of the block begins or ends with white space
        (:func:`~weightstream.ingest._lines.padded`): trimming is then skipped.
        """
        ws = ASCII_WHITESPACE
        user = pl.col("user_id")
        user_ok = ~user.is_in(_NULL_SPELLINGS)
        if padded:
            user_ok &= user.str.strip_chars(ws) == user
        ts_text = pl.col("timestamp")
        # Seconds and the fraction apart: polars' fixed-format parser is several times faster
        # than its fractional one, and the regex below has fixed the shape already.
        length = ts_text.str.len_bytes()
        fraction = (
            pl.when(length == 23)
            .then(ts_text.str.slice(20, 3).cast(pl.Int64, strict=False) * 1000)
            .when(length == 26)
            .then(ts_text.str.slice(20, 6).cast(pl.Int64, strict=False))
            .otherwise(0)
        )
        ts = (
            ts_text.str.slice(0, 19)
            .str.replace("T", " ", literal=True)
            .str.to_datetime("%Y-%m-%d %H:%M:%S", time_unit="us", strict=False)
            .dt.epoch("us")
            + fraction
        )
        weight = pl.col("weight")
        value = weight.cast(pl.Float64, strict=False)
        unit_out, factor, divide = self._unit_columns(frame.get_column("unit"))
        source_out = self._source_column(frame.get_column("source"))
        ident = pl.col("id") if not padded else pl.col("id").str.strip_chars(ws)
        ident = pl.when(ident.is_in(_NULL_SPELLINGS)).then(None).otherwise(ident)
        limits = self.config.validation
        kg = pl.col("weight_kg")
        typed = (
            frame.lazy()
            .with_columns(ts=ts, value=value, factor=factor, divide=divide)
            .with_columns(
                weight_kg=pl.when(pl.col("divide"))
                .then(pl.col("value") / pl.col("factor"))
                .otherwise(pl.col("value") * pl.col("factor"))
            )
            .select(
                "line",
                ident.alias("id"),
                user.alias("user"),
                "ts",
                "value",
                unit_out.alias("unit"),
                "weight_kg",
                source_out.alias("source"),
                (
                    user_ok
                    & ts_text.str.contains(_TS_PLAIN)
                    & pl.col("ts").is_between(self.min_ts, self.max_ts)
                    & weight.str.contains(_WEIGHT_PLAIN)
                    & (pl.col("value") > 0.0)
                    & pl.col("value").is_finite()
                    & kg.is_between(limits.min_weight_kg, limits.max_weight_kg)
                )
                .fill_null(False)
                .alias("_ok"),
            )
            # A block is small: polars' in-memory engine, not the streaming one it defaults
            # to, took 10-13% less CPU (eng2.py, 40 runs of one block each way, load ~7).
            .collect(engine="in-memory")
        )
        ok = typed.get_column("_ok")
        good = typed.drop("_ok")
        if ok.all():
            return good
        good = good.filter(ok)
        from weightstream.ingest.csv_reader import RawRow

        extra: list[tuple[object, ...]] = []
        rest = frame.filter(~ok).select(
            "line", "user_id", "timestamp", "weight", "unit", "source", "id"
        )
        for line, u, t, w, unit_text, src, i in rest.iter_rows():
            item = parse_row(
                RawRow(line, u, t, w, unit_text, src, i), config=self.config, now=self.now
            )
            if isinstance(item, RowProblem):
                invalid.append((line, item))
            else:
                extra.append(_row(line, item))
        if not extra:
            return good
        return pl.concat([good, pl.DataFrame(extra, schema=VALID_SCHEMA, orient="row")])

    def _unit_columns(self, units: pl.Series) -> tuple[pl.Expr, pl.Expr, pl.Expr]:
        """The unit as passed on, its factor and whether it divides (null: not a mass unit)."""
        if units.null_count() == units.len():  # no unit column: kg (``_unit(None)``)
            return pl.lit(""), pl.lit(1.0), pl.lit(False)
        texts = units.unique().drop_nulls().to_list()
        judged = [self._unit(u) for u in texts]
        code = pl.col("unit").cast(pl.Enum(texts)).to_physical()
        out = pl.Series([j[0] for j in judged], dtype=pl.String)
        factor = pl.Series([j[2] for j in judged], dtype=pl.Float64)
        divide = pl.Series([j[1] == "/" for j in judged], dtype=pl.Boolean)
        return (
            pl.lit(out).gather(code),
            pl.lit(factor).gather(code),
            pl.lit(divide).gather(code),
        )

    def _source_column(self, sources: pl.Series) -> pl.Expr:
        if sources.null_count() == sources.len():  # no source column
            return pl.lit(UNKNOWN_SOURCE)
        texts = sources.unique().drop_nulls().to_list()
        code = pl.col("source").cast(pl.Enum(texts)).to_physical()
        outs = pl.Series([self._source(s) for s in texts], dtype=pl.String)
        return pl.lit(outs).gather(code).fill_null(UNKNOWN_SOURCE)  # no source: ``_source(None)``

    def _unit(self, unit: str | None) -> tuple[str | None, str | None, float | None]:
        """(the unit as passed on, the operation, the factor), or Nones to send the row on."""
        if unit is None:
            return ("", "*", 1.0)
        found = self._units.get(unit)
        if unit not in self._units:
            out = unit.strip(ASCII_WHITESPACE)
            how = conversion(out, self.config.units)
            found = None if isinstance(how, RowProblem) else (out, how[0], how[1])
            self._units[unit] = found
        return found if found is not None else (None, None, None)

    def _source(self, source: str | None) -> str:
        if source is None:
            return UNKNOWN_SOURCE
        out = self._sources.get(source)
        if out is None:
            body = source.strip(ASCII_WHITESPACE)
            out = UNKNOWN_SOURCE if len(body) <= 4 and body.lower() in NULL_TOKENS else body
            self._sources[source] = out
        return out


def _row(
    line: int, item: tuple[str | None, str, datetime, float, str, float, str]
) -> tuple[object, ...]:
    ident, user, when, value, unit, weight_kg, source = item
    return (line, ident, user, to_micros(when), value, unit, weight_kg, source)
