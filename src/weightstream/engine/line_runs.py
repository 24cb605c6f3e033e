"""Lines given in any order, written by row with bounded memory: sorted runs merged by range.

A file run decides its rows partition by partition, so the results file's lines come in no
useful order. :class:`LineRuns` holds them in memory while they are few (``memory_rows``).
Past that, each batch of lines is sorted by row and appended to one temporary file as a
*run*: the lines' bytes in row order (each with its line end), then their row numbers, then
their lengths in bytes. For each run it notes where every range of ``range_rows`` rows
begins, as a line and as a byte. :meth:`LineRuns.write` merges the runs one range at a time:
it reads the piece of each run that falls in the range (three ``pread`` calls) and writes
the range's lines in row order. A row number is unique, so a range holds at most
``range_rows`` lines, whatever the file; every line is written once and read once, so the
cost grows with the file.

Before, each range's lines were kept apart as they came (a small frame for each range of
each batch, in a :class:`~weightstream.ingest.spill.Spill`): that grew with the square of
the file, ~200,000 frames and 80 s at 10M rows. Written by hand because polars reads an Arrow
IPC stream only whole: one range of a run cannot be read alone without pyarrow, which is not
a dependency.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

import numpy as np
import polars as pl

from weightstream.errors import StorageError
from weightstream.heap import long_lived_heap
from weightstream.ingest.spill import spill_directory
from weightstream.results_file import output_error

__all__ = ["LineRuns"]

#: Lines gathered before they are written as one run, once the runs are on disk (~4 MB).
_RUN_ROWS: Final = 20_000
#: Lines written to the output at a time (what a range's output holds at once).
_OUT_LINES: Final = 5_000
_END: Final = b"\r\n"
#: The collector's youngest generation while the runs are merged (:mod:`weightstream.heap`):
#: putting a range's lines in row order makes an object per line (a slice of the range's
#: text), and Python's default full collections, each walking every object of the process,
#: took most of the merge: 1M lines in ranges spread over 50 runs, 0.95-1.12 s, against
#: 0.24-0.27 s tuned (a throwaway script, 4 Dec).
_MERGE_YOUNG: Final = 20_000


@dataclass(frozen=True)
class _Run:
    """One run in the runs' file: where it starts, and where each range begins in it. Its
    text comes first, then its rows, then its lengths (8 bytes each)."""

    text_at: int
    #: First line of range k (k = 0 .. len-2), and the run's line count last.
    line_cuts: np.ndarray
    #: First byte of range k, from ``text_at``; the run's byte count last.
    byte_cuts: np.ndarray

    @property
    def rows_at(self) -> int:
        return self.text_at + int(self.byte_cuts[-1])

    @property
    def lens_at(self) -> int:
        return self.rows_at + 8 * int(self.line_cuts[-1])


class LineRuns:
    """Lines (``row``, ``line`` without its end) in, in row order out; see the module."""

    def __init__(self, memory_rows: int, range_rows: int, directory: Path | None = None) -> None:
        self.memory_rows = memory_rows
        self.range_rows = range_rows
        self._parent = directory
        self._held: list[pl.DataFrame] = []
        self._held_rows = 0
        self._runs: list[_Run] = []
        self._dir: Path | None = None
        self._file: BinaryIO | None = None

    @property
    def on_disk(self) -> bool:
        return self._file is not None

    @property
    def runs(self) -> int:
        return len(self._runs)

    def add(self, lines: pl.DataFrame) -> None:
        """Lines of ``lines`` (columns ``row`` and ``line``), in any order."""
        if not lines.height:
            return
        self._held.append(lines.select("row", "line"))
        self._held_rows += lines.height
        if self._held_rows > (self.memory_rows if self._file is None else _RUN_ROWS - 1):
            self._write_run()

    def write(self, handle: BinaryIO) -> None:
        """Write every line, by row, each with a CRLF end, to ``handle``; the lines are dropped."""
        if self._file is None:
            if self._held:
                held = pl.concat(self._held, how="vertical").sort("row")
                self._held, self._held_rows = [], 0
                for start in range(0, held.height, _OUT_LINES):
                    _write_lines(handle, held.slice(start, _OUT_LINES))
            return
        if self._held:
            self._write_run()
        with long_lived_heap(_MERGE_YOUNG):
            self._merge(handle)

    def _merge(self, handle: BinaryIO) -> None:
        """Write the runs' lines range by range, each range's in row order."""
        assert self._file is not None
        fd = self._file.fileno()
        ranges = max(len(run.line_cuts) for run in self._runs) - 1
        for k in range(ranges):
            rows, lens, text = self.range_lines(fd, k)
            if not len(rows):
                continue
            if len(rows) == 1 or bool((rows[1:] > rows[:-1]).all()):
                handle.write(text)
                continue
            order = np.argsort(rows, kind="stable")
            starts = (np.cumsum(lens) - lens)[order].tolist()
            sizes = lens[order].tolist()
            view = memoryview(text)
            for at in range(0, len(starts), _OUT_LINES):
                piece = zip(starts[at : at + _OUT_LINES], sizes[at : at + _OUT_LINES], strict=True)
                handle.write(b"".join([view[s : s + n] for s, n in piece]))

    def range_lines(self, fd: int, k: int) -> tuple[np.ndarray, np.ndarray, bytearray]:
        """Range ``k``'s lines from every run: their rows, byte lengths and bytes, run after
        run (each run's in row order). The bytes are read into one buffer: the range's text
        is held once."""
        rows: list[np.ndarray] = []
        lens: list[np.ndarray] = []
        pieces: list[tuple[int, int]] = []  # (offset in the file, size) of each run's text
        try:
            for run in self._runs:
                if k + 1 >= len(run.line_cuts):
                    continue
                a, b = int(run.line_cuts[k]), int(run.line_cuts[k + 1])
                if a == b:
                    continue
                start, end = int(run.byte_cuts[k]), int(run.byte_cuts[k + 1])
                pieces.append((run.text_at + start, end - start))
                for column, where in ((rows, run.rows_at), (lens, run.lens_at)):
                    column.append(np.empty(b - a, np.int64))
                    _read_into(fd, column[-1].data, where + 8 * a)
            text = bytearray(sum(size for _, size in pieces))
            view, at = memoryview(text), 0
            for offset, size in pieces:
                _read_into(fd, view[at : at + size], offset)
                at += size
        except OSError as exc:
            raise StorageError(f"cannot read spill file {self._path}: {exc.strerror}") from None
        if not rows:
            return np.empty(0, np.int64), np.empty(0, np.int64), text
        return np.concatenate(rows), np.concatenate(lens), text

    def close(self) -> None:
        """Forget every line and remove the temporary file."""
        self._held, self._held_rows, self._runs = [], 0, []
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._dir is not None:
            self._path.unlink(missing_ok=True)
            self._dir.rmdir()
            self._dir = None

    @property
    def _path(self) -> Path:
        assert self._dir is not None
        return self._dir / "runs"

    def _write_run(self) -> None:
        """The held lines, sorted by row, appended to the runs' file as one run.

        polars writes the lines straight into the file: no copy of the run's text is held.
        """
        frame = pl.concat(self._held, how="vertical").sort("row")
        self._held, self._held_rows = [], 0
        rows = frame.get_column("row").to_numpy().astype(np.int64, copy=False)
        if rows[0] < 0:  # ranges start at row 0: a line before it would never be written
            raise ValueError("a results line's row number is negative")
        lens = frame.get_column("line").str.len_bytes().to_numpy().astype(np.int64) + len(_END)
        ends = np.cumsum(lens)
        last = int(rows[-1]) // self.range_rows
        bounds = np.arange(last + 2, dtype=np.int64) * self.range_rows
        line_cuts = np.searchsorted(rows, bounds)
        byte_cuts = np.concatenate(([0], ends))[line_cuts]
        if self._file is None:
            self._dir = spill_directory(self._parent)
            try:
                self._file = self._path.open("w+b")
            except OSError as exc:
                raise output_error(self._path, exc, "spill file") from None
        size = int(ends[-1])
        try:
            at = self._file.tell()  # the end of the file: runs are only appended
            _write_lines(self._file, frame)
            if self._file.tell() != at + size:  # pragma: no cover - polars wrote other bytes
                raise StorageError("the results lines changed when written to the spill file")
            self._file.write(rows.tobytes())
            self._file.write(lens.tobytes())
            self._file.flush()  # read back by pread, past the file object's buffer
        except OSError as exc:  # a full disk is exit 73, as for any file we write
            raise output_error(self._path, exc, "spill file") from None
        self._runs.append(_Run(at, line_cuts, byte_cuts))

    def __enter__(self) -> LineRuns:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_into(fd: int, buffer: memoryview, offset: int) -> None:
    """Fill ``buffer`` from ``fd`` at ``offset``, whole (a short read raises OSError)."""
    if os.preadv(fd, [buffer], offset) != buffer.nbytes:
        raise OSError(0, "the spill file is shorter than what was written to it")


def _write_lines(handle: BinaryIO, frame: pl.DataFrame) -> None:
    frame.get_column("line").to_frame().write_csv(
        handle, include_header=False, quote_style="never", line_terminator="\r\n"
    )
