"""An export in processing order without holding the export: its readings split by user range.

The processing order of a file (:mod:`weightstream.pipeline`) is its invalid rows by line
number, then its valid readings sorted by :data:`ORDER_KEY` (user, event time, then content:
source, unit, value, id; the line only breaks a tie between two copies of one reading), so
each user's readings come together and in (time, content) order, whatever the file order
(invariant I14).

A large file is sorted in **partitions**: ranges of users, each sorted alone, one after the
other. Partitions cut the order without changing it: whatever the bounds, the partitions in
turn give the whole sorted order, so a resumed run finds the order (and the meaning of the
committed position) of the run it resumes, and the bounds are free to serve memory alone.
How many partitions a file has depends on its size (:func:`partition_count`: one per
:data:`PARTITION_BYTES` of file); their bounds (:class:`_UserCounts`) cut the readings into
ranges of about equal rows. A file of up to :data:`PARTITION_BYTES` is one partition.

Users in order, rather than hashed to partitions, is what the store wants: every index of the
history leads with the user, so a group of users in order touches one narrow range of each
index, where hashed users touched pages all over them (measured on a 200,000-row replay of
stored rows: 39% fewer bytes written to SQLite, 22% less of its CPU time).

:func:`read_order` reads the file block by block (:func:`~weightstream.ingest.columnar.read_blocks`,
the columnar reader's own rules and reasons): each block's readings wait in a
:class:`~weightstream.ingest.spill.Spill` while the rows of each user are counted, then are
split by the bounds into another spill; invalid rows are kept in line order. Each spill holds
rows in memory up to ``memory_rows``, else on disk. :meth:`ProcessingOrder.groups` then reads
one partition at a time, sorts it, adds its readings' content keys (column ``content``,
:func:`~weightstream.engine.content_keys.with_content_keys`) and cuts the order into commit
groups, from any position.
Memory is bounded by a block, a partition, a group and the counts' sketch, not by the file.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Final

import polars as pl

from weightstream.config import Config
from weightstream.engine.content_keys import CONTENT, with_content_keys
from weightstream.ingest._problem import RowProblem
from weightstream.ingest.columnar import VALID_SCHEMA, read_blocks
from weightstream.ingest.spill import Spill
from weightstream.model import Reason

__all__ = [
    "ORDER_KEY",
    "PARTITION_BYTES",
    "Group",
    "ProcessingOrder",
    "partition_count",
    "invalid_frame",
    "invalid_problems",
    "read_order",
    "sort_readings",
]

#: Bytes of file per partition: a partition of 4 MB of CSV is about 28,000 readings (synth's
#: 143 bytes a row), about 4 MB as columns, sorted and decided in memory at once.
PARTITION_BYTES: Final = 4 << 20
#: The order of the readings in a partition: user, event time, then content (source, unit,
#: value, id), the order of :func:`weightstream.model.order_key`, so readings at the same
#: instant never depend on where they stand in the file. Rows that tie on everything (the same
#: reading twice) keep line order.
ORDER_KEY: Final = (
    pl.col("user"),
    pl.col("ts"),
    pl.col("source"),
    pl.col("unit"),
    pl.col("value"),
    pl.col("id").fill_null(""),
    pl.col("line"),
)
_INVALID: Final = -1  # the spill key of the invalid rows
_INVALID_SCHEMA: Final = {
    "line": pl.Int64,
    "reason": pl.String,
    "field": pl.String,
    "message": pl.String,
}
#: Readings split into partitions at a time: a block's readings fall in every partition (a
#: 1 M-row file has 35), and each piece is one frame written to the spill, whose cost is
#: mostly per frame. Four blocks at a time (8 MB of columns) made 4 times fewer, larger pieces.
_SPLIT_ROWS: Final = 1 << 16
#: Users the counts keep exactly; past that, neighbours are merged (bounds stay close).
_SKETCH_USERS: Final = 1 << 16


def sort_readings(valid: pl.DataFrame) -> pl.DataFrame:
    """Valid readings (:data:`~weightstream.ingest.columnar.VALID_SCHEMA`) by :data:`ORDER_KEY`."""
    return valid.sort(list(ORDER_KEY))


def partition_count(file_bytes: int) -> int:
    """The partitions of a file of ``file_bytes`` bytes.

    >>> partition_count(0), partition_count(PARTITION_BYTES), partition_count(PARTITION_BYTES + 1)
    (1, 1, 2)
    """
    return max(1, -(-file_bytes // PARTITION_BYTES))


@dataclass
class Group:
    """Rows ``start .. end-1`` of the processing order: invalid rows first, then readings."""

    start: int
    end: int
    invalid: list[tuple[int, RowProblem]]
    valid: pl.DataFrame


@dataclass
class ProcessingOrder:
    """An export's rows in processing order, by partition (see the module docstring)."""

    spill: Spill
    partitions: int
    #: The partitions' bounds: partition ``k`` holds the users above ``bounds[k-1]`` up to
    #: ``bounds[k]`` (none for one partition).
    bounds: list[str] = field(default_factory=list)
    #: Seconds spent sorting partitions and making their content keys (added to as
    #: :meth:`groups` reads them).
    timings: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        #: Users of the partitions read so far (by :meth:`groups`, or skipped by it): once
        #: the groups are all given out, the users of the file.
        self.users = 0
        self.invalid_rows = self.spill.rows(_INVALID)
        self.rows = self.invalid_rows + sum(self.spill.rows(p) for p in range(self.partitions))

    def __len__(self) -> int:
        return self.rows

    @property
    def on_disk(self) -> bool:
        return self.spill.on_disk

    def groups(self, position: int, size: int) -> Iterator[Group]:
        """The order from ``position`` in groups of ``size`` rows (the last may be shorter).

        One pass: a partition is read, sorted and given out once, then dropped.
        """
        start, count = position, 0
        invalid: list[pl.DataFrame] = []
        valid: list[pl.DataFrame] = []
        for is_invalid, piece in self._pieces(position):
            while piece.height:
                take = min(size - count, piece.height)
                (invalid if is_invalid else valid).append(piece.head(take))
                piece = piece.slice(take)
                count += take
                if count == size:
                    yield _group(start, start + count, invalid, valid)
                    start, count, invalid, valid = start + count, 0, [], []
        if count:
            yield _group(start, start + count, invalid, valid)

    def close(self) -> None:
        self.spill.close()

    def _pieces(self, position: int) -> Iterator[tuple[bool, pl.DataFrame]]:
        """The order from ``position`` as pieces: (invalid?, rows), each partition sorted."""
        skip = position
        for frame in self.spill.frames(_INVALID):
            if skip >= frame.height:
                skip -= frame.height
                continue
            yield True, frame.slice(skip)
            skip = 0
        for part in range(self.partitions):
            started = time.perf_counter()  # reading a partition back is part of its sort
            rows = self.spill.rows(part)
            held = self.spill.take(part)
            if held is None:
                continue
            # A user lives in one partition: the file's users are the partitions' sum.
            self.users += held.get_column("user").n_unique()
            if skip >= rows:
                skip -= rows
                continue
            frame = with_content_keys(sort_readings(held))
            self.timings["sort"] = self.timings.get("sort", 0.0) + time.perf_counter() - started
            yield False, frame.slice(skip)
            skip = 0


def _group(start: int, end: int, invalid: list[pl.DataFrame], valid: list[pl.DataFrame]) -> Group:
    problems = invalid_problems(invalid)
    if not valid:
        readings = _EMPTY_VALID
    else:
        readings = valid[0] if len(valid) == 1 else pl.concat(valid, how="vertical")
    return Group(start, end, problems, readings)


def read_order(
    path: str | Path,
    config: Config,
    *,
    now: datetime,
    column_map: Mapping[str, str] | None = None,
    memory_rows: int,
    directory: Path | None = None,
) -> ProcessingOrder:
    """Read the export at ``path`` into its processing order (see the module docstring).

    Rows are held in memory up to ``memory_rows``, else written to a temporary directory
    (in ``directory``, default ``$TMPDIR``) that :meth:`ProcessingOrder.close` removes.
    """
    count = partition_count(Path(path).stat().st_size)
    spill = Spill(memory_rows, directory)
    try:
        blocks = read_blocks(path, config, now=now, column_map=column_map)
        if count == 1:
            for block in blocks:
                if block.invalid:
                    spill.add(_INVALID, invalid_frame(block.invalid))
                spill.add(0, block.valid)
            return ProcessingOrder(spill, 1)
        # Bounds need every user's rows: the readings wait (in their own spill) until the
        # file is read, then go to their partitions.
        counts = _UserCounts()
        with Spill(memory_rows, directory) as waiting:
            for block in blocks:
                if block.invalid:
                    spill.add(_INVALID, invalid_frame(block.invalid))
                if block.valid.height:
                    waiting.add(0, block.valid)
                    counts.add(block.valid.get_column("user"))
            bounds = counts.bounds(count)
            split = _Splitter(bounds)
            for frame in _gathered(waiting.frames(0), _SPLIT_ROWS):
                for part, piece in split(frame):
                    spill.add(part, piece)
    except BaseException:
        spill.close()
        raise
    return ProcessingOrder(spill, count, bounds)


class _UserCounts:
    """Rows per user over a file's blocks: what the partitions' bounds are cut from.

    Exact up to :data:`_SKETCH_USERS` users; past that, neighbouring users (in sort order)
    are merged into entries of about equal rows, each named after its last user, so memory
    stays bounded and the bounds stay within an entry of the exact ones. Written here, not
    taken from a library, because polars has no streaming quantile of strings weighted by
    counts, and the bounds only balance memory: the order does not depend on them.
    """

    def __init__(self) -> None:
        self._counts: pl.DataFrame | None = None
        self._pending: list[pl.DataFrame] = []
        self._pending_rows = 0

    def add(self, users: pl.Series) -> None:
        counts = users.value_counts(name="n")
        # The counted ids are copied: polars' value_counts points into the block's text, and
        # the blocks waiting to be merged (up to _SKETCH_USERS users: ~200 blocks) held all of
        # theirs, ~0.5 MB each (a 10 M-row run peaked at 342 MB while reading).
        fresh = pl.Series("user", counts.get_column("user").to_list(), dtype=pl.String)
        self._pending.append(counts.with_columns(fresh, pl.col("n").cast(pl.Int64)))
        self._pending_rows += counts.height
        if self._pending_rows > _SKETCH_USERS:
            self._compact()

    def bounds(self, parts: int) -> list[str]:
        """``parts - 1`` users that cut the rows into ``parts`` ranges of about equal rows."""
        self._compact()
        counts = self._counts
        if counts is None or not counts.height:
            return []
        total = counts.get_column("n").cum_sum()
        targets = pl.Series([total[-1] * k / parts for k in range(1, parts)], dtype=pl.Float64)
        at = total.cast(pl.Float64).search_sorted(targets, side="left")
        users = counts.get_column("user")
        return [users[min(int(k), len(users) - 1)] for k in at]

    def _compact(self) -> None:
        frames = [f for f in (self._counts, *self._pending) if f is not None]
        self._pending, self._pending_rows = [], 0
        if not frames:
            return
        counts = pl.concat(frames).group_by("user").agg(pl.col("n").sum()).sort("user")
        if counts.height > _SKETCH_USERS:
            # Neighbours merged into entries of about equal rows (a heavy user stays alone):
            # a bound then falls at most one entry's rows away from where it would fall.
            width = counts.get_column("n").sum() / (_SKETCH_USERS // 2)
            counts = (
                counts.with_columns(
                    ((pl.col("n").cum_sum() - pl.col("n")) / width).floor().alias("_entry")
                )
                .group_by("_entry", maintain_order=True)
                .agg(pl.col("user").last(), pl.col("n").sum())
                .drop("_entry")
            )
        self._counts = counts


def _gathered(frames: Iterator[pl.DataFrame], rows: int) -> Iterator[pl.DataFrame]:
    """``frames`` joined into frames of at least ``rows`` rows (the last may be shorter)."""
    held: list[pl.DataFrame] = []
    count = 0
    for frame in frames:
        held.append(frame)
        count += frame.height
        if count >= rows:
            yield held[0] if len(held) == 1 else pl.concat(held, how="vertical", rechunk=False)
            held, count = [], 0
    if held:
        yield held[0] if len(held) == 1 else pl.concat(held, how="vertical", rechunk=False)


def invalid_problems(frames: Iterable[pl.DataFrame]) -> list[tuple[int, RowProblem]]:
    """Invalid rows kept as frames (:func:`invalid_frame`) back as (line, problem) pairs."""
    return [
        (line, RowProblem(Reason(reason), field_name, message))
        for frame in frames
        for line, reason, field_name, message in frame.iter_rows()
    ]


def invalid_frame(invalid: list[tuple[int, RowProblem]]) -> pl.DataFrame:
    """Invalid rows as a frame (to spill them): line, reason, field, message."""
    return pl.DataFrame(
        [(line, str(p.reason), p.field, p.message) for line, p in invalid],
        schema=_INVALID_SCHEMA,
        orient="row",
    )


class _Splitter:
    """A block's readings by partition: the users up to the first bound, then the next..."""

    def __init__(self, bounds: list[str]) -> None:
        self.bounds = pl.Series(bounds, dtype=pl.String)

    def __call__(self, valid: pl.DataFrame) -> Iterator[tuple[int, pl.DataFrame]]:
        if not len(self.bounds) or not valid.height:
            yield 0, valid
            return
        part = self.bounds.search_sorted(valid.get_column("user"), side="left")
        keyed = valid.with_columns(part.cast(pl.Int32).alias("_part"))
        # Without the key column: dropping it from each piece cost as much as the split.
        for key, frame in keyed.partition_by("_part", as_dict=True, include_key=False).items():
            yield int(key[0]), frame


_EMPTY_VALID: Final = pl.DataFrame(schema={**VALID_SCHEMA, CONTENT: pl.String})
