"""An export in processing order without holding the export: its readings split by user.

The processing order of a file (:mod:`weightstream.pipeline`) is its invalid rows by line
number, then its valid readings **partition by partition**, each partition sorted by
:data:`ORDER_KEY` (user, event time, then content: source, unit, value, id; the line only
breaks a tie between two copies of one reading). A user's partition is a stable hash of its
id (:func:`partition_of`, BLAKE2b: the same on every machine and Python version), so each user
lives in one partition and its readings come in (time, content) order, whatever the file
order (invariant I14).

How many partitions a file has depends on its size alone (:func:`partition_count`: one per
:data:`PARTITION_BYTES` of file), never on the configuration or the machine: a resumed run
finds the order, and so the meaning of the committed position, of the run it resumes. A file
of up to :data:`PARTITION_BYTES` is one partition: all its readings sorted by the key.

:func:`read_order` reads the file block by block (:func:`~weightstream.ingest.columnar.read_blocks`,
the columnar reader's own rules and reasons), and keeps each block's readings under their
partitions and its invalid rows in line order in a :class:`~weightstream.ingest.spill.Spill`:
in memory for a file of up to ``memory_rows`` rows, else on disk. :meth:`ProcessingOrder.groups`
then reads one partition at a time, sorts it and cuts the order into commit groups, from any
position. Memory is bounded by a block, a partition and a group, not by the file.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Final

import polars as pl

from weightstream.config import Config
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
    "partition_of",
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
_CACHED_USERS: Final = 1 << 14  # partitions remembered across blocks (then forgotten)


def sort_readings(valid: pl.DataFrame) -> pl.DataFrame:
    """Valid readings (:data:`~weightstream.ingest.columnar.VALID_SCHEMA`) by :data:`ORDER_KEY`."""
    return valid.sort(list(ORDER_KEY))


def partition_count(file_bytes: int) -> int:
    """The partitions of a file of ``file_bytes`` bytes.

    >>> partition_count(0), partition_count(PARTITION_BYTES), partition_count(PARTITION_BYTES + 1)
    (1, 1, 2)
    """
    return max(1, -(-file_bytes // PARTITION_BYTES))


def partition_of(user_id: str, count: int) -> int:
    """The partition of a user among ``count``: a stable hash of its id.

    >>> partition_of("user-1", 7) == partition_of("user-1", 7), partition_of("user-1", 1)
    (True, 0)
    """
    if count == 1:
        return 0
    digest = hashlib.blake2b(user_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count


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
    #: Seconds spent sorting partitions (added to as :meth:`groups` reads them).
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
            rows = self.spill.rows(part)
            held = self.spill.take(part)
            if held is None:
                continue
            # A user lives in one partition: the file's users are the partitions' sum.
            self.users += held.get_column("user").n_unique()
            if skip >= rows:
                skip -= rows
                continue
            started = time.perf_counter()
            frame = sort_readings(held)
            self.timings["sort"] = self.timings.get("sort", 0.0) + time.perf_counter() - started
            yield False, frame.slice(skip)
            skip = 0


def _group(start: int, end: int, invalid: list[pl.DataFrame], valid: list[pl.DataFrame]) -> Group:
    problems = [
        (line, RowProblem(Reason(reason), field_name, message))
        for frame in invalid
        for line, reason, field_name, message in frame.iter_rows()
    ]
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
        split = _Splitter(count)
        for block in read_blocks(path, config, now=now, column_map=column_map):
            if block.invalid:
                spill.add(_INVALID, _invalid_frame(block.invalid))
            for part, frame in split(block.valid):
                spill.add(part, frame)
    except BaseException:
        spill.close()
        raise
    return ProcessingOrder(spill, count)


def _invalid_frame(invalid: list[tuple[int, RowProblem]]) -> pl.DataFrame:
    return pl.DataFrame(
        [(line, str(p.reason), p.field, p.message) for line, p in invalid],
        schema=_INVALID_SCHEMA,
        orient="row",
    )


class _Splitter:
    """A block's readings by partition (the partition of each user computed once)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.known: dict[str, int] = {}

    def __call__(self, valid: pl.DataFrame) -> Iterator[tuple[int, pl.DataFrame]]:
        if self.count == 1 or not valid.height:
            yield 0, valid
            return
        users = valid.get_column("user").unique().to_list()
        if len(self.known) + len(users) > _CACHED_USERS:
            self.known.clear()
        known, count = self.known, self.count
        parts = []
        for user in users:
            part = known.get(user)
            if part is None:
                part = known[user] = partition_of(user, count)
            parts.append(part)
        keyed = valid.with_columns(
            pl.col("user").replace_strict(users, parts, return_dtype=pl.Int32).alias("_part")
        )
        for key, frame in keyed.partition_by("_part", as_dict=True).items():
            yield int(key[0]), frame.drop("_part")


_EMPTY_VALID: Final = pl.DataFrame(schema=VALID_SCHEMA)
