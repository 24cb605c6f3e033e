"""The results put back in row order: every line once, by row, at most 25,000 held (issue 11).

Writing the results file is a file run's memory peak: :meth:`ResultsSpill.write` merges one
range of rows at a time, so the range's size is the bound. The lines go to disk as sorted
runs (:mod:`weightstream.engine.line_runs`); the file they make must not depend on how the
lines were batched, on whether they went to disk, or on the bytes a line holds.
"""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from weightstream.engine.line_runs import LineRuns
from weightstream.engine.results import ResultsSpill


def _lines(rows: list[int], text: str = "line {}") -> pl.DataFrame:
    chunk = pl.Series("row", rows, dtype=pl.Int64)
    return pl.DataFrame({"row": chunk}).with_columns(pl.format(text, pl.col("row")).alias("line"))


def _written(spill: ResultsSpill) -> list[str]:
    out = io.BytesIO()
    spill.write(out)
    lines = out.getvalue().decode().split("\r\n")
    assert lines[-1] == ""
    return lines[1:-1]


def test_writing_holds_at_most_25000_lines_and_puts_every_row_in_order(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """60,000 lines added in shuffled slices come out once each, by row; no range merged
    holds more than 25,000 of them."""
    seed = random.randrange(10**6)
    print(f"seed {seed}")
    rows = list(range(2, 60_002))
    random.Random(seed).shuffle(rows)
    held: list[int] = []
    merge = LineRuns.range_lines

    def recording(self: LineRuns, fd: int, k: int) -> tuple[np.ndarray, np.ndarray, bytearray]:
        part = merge(self, fd, k)
        held.append(len(part[0]))
        return part

    monkeypatch.setattr(LineRuns, "range_lines", recording)
    with ResultsSpill(1_000, raw=False, directory=tmp_path) as spill:
        for start in range(0, len(rows), 7_000):
            spill.add_lines(_lines(rows[start : start + 7_000]))
        assert spill.lines.on_disk
        assert spill.rows == 60_000
        assert _written(spill) == [f"line {r}" for r in range(2, 60_002)]
    assert len(held) == 3 and max(held) <= 25_000, held  # rows 0-24,999, 25,000-49,999, 50,000-
    assert not list(tmp_path.iterdir())  # the runs' file and its directory are gone


def test_each_batch_of_lines_is_one_run(tmp_path: Path) -> None:
    """Each batch of lines past the memory bound is one sorted run (not one piece per range
    of rows, which grew with the square of the file); merged, they give every line by row."""
    rows = list(range(100_000))
    random.Random(5).shuffle(rows)
    with LineRuns(10, 25_000, tmp_path) as runs:
        for start in range(0, len(rows), 20_000):
            runs.add(_lines(rows[start : start + 20_000]))
        assert runs.runs == 5
        out = io.BytesIO()
        runs.write(out)
    assert out.getvalue() == b"".join(f"line {r}\r\n".encode() for r in range(100_000))


def test_in_memory_and_on_disk_write_the_same_bytes(tmp_path: Path) -> None:
    """Lines of several bytes a character, with quotes and commas (CSV lines as the results
    file holds them), and rows far apart: the same file whether the lines stayed in memory
    or went to disk in many small runs."""
    rng = random.Random(11)
    rows = rng.sample(range(400_000), 3_000)
    text = 'café "{}",ü, 体重'
    batches, at = [], 0
    while at < len(rows):
        size = rng.randint(1, 400)
        batches.append(rows[at : at + size])
        at += size
    written = []
    for memory_rows in (10**6, 0):
        with ResultsSpill(memory_rows, raw=False, directory=tmp_path) as spill:
            for batch in batches:
                spill.add_lines(_lines(batch, text))
            assert spill.lines.on_disk == (memory_rows == 0)
            written.append(_written(spill))
    assert written[0] == written[1] == [text.replace("{}", str(r)) for r in sorted(rows)]


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    rows=st.lists(st.integers(0, 3_000), unique=True, min_size=1, max_size=400),
    cuts=st.lists(st.integers(1, 60), min_size=1, max_size=20),
    memory_rows=st.sampled_from([0, 5, 10_000]),
    range_rows=st.sampled_from([1, 7, 100, 25_000]),
)
def test_any_batching_and_range_size_writes_the_rows_in_order(
    rows: list[int], cuts: list[int], memory_rows: int, range_rows: int
) -> None:
    """Whatever the batches, the memory bound and the range size: every line once, by row."""
    with LineRuns(memory_rows, range_rows) as runs:
        at, k = 0, 0
        while at < len(rows):
            size = cuts[k % len(cuts)]
            runs.add(_lines(rows[at : at + size]))
            at, k = at + size, k + 1
        out = io.BytesIO()
        runs.write(out)
    assert out.getvalue() == b"".join(f"line {r}\r\n".encode() for r in sorted(rows))


def test_a_spill_file_cut_short_is_a_storage_error(tmp_path: Path) -> None:
    """A runs' file shorter than what was written to it (the disk lost it) is a typed
    error, not a results file missing lines."""
    from weightstream.errors import StorageError

    with LineRuns(0, 25_000, tmp_path) as runs:
        runs.add(_lines(list(range(100))))
        (spill_dir,) = tmp_path.iterdir()
        (runs_file,) = spill_dir.iterdir()
        with runs_file.open("r+b") as fh:
            fh.truncate(100)
        with pytest.raises(StorageError, match="spill file"):
            runs.write(io.BytesIO())


def test_a_negative_row_number_is_refused_not_lost(tmp_path: Path) -> None:
    """Ranges start at row 0; a line numbered below it is refused when its run is written
    (it would otherwise never reach the file)."""
    with LineRuns(0, 25_000, tmp_path) as runs, pytest.raises(ValueError, match="negative"):
        runs.add(_lines([5, -1, 7]))


def test_runs_are_merged_with_the_collector_tuned_and_left_as_found(tmp_path: Path) -> None:
    """The merge makes an object per line: it runs with the young generation collected every
    20,000 allocations and what was alive frozen (:mod:`weightstream.heap`), and leaves the
    collector as it found it."""
    import gc

    seen: list[tuple[int, int]] = []

    class Recording(io.BytesIO):
        def write(self, data: Any) -> int:
            seen.append((gc.get_threshold()[0], gc.get_freeze_count()))
            return super().write(data)

    before = gc.get_threshold(), gc.get_freeze_count()
    runs = LineRuns(100, 1_000, directory=tmp_path)
    for k in range(6):  # each batch spans every range: a range's lines come from 6 runs
        runs.add(_lines(list(range(k, 3_000, 6))))
    assert runs.on_disk
    runs.write(Recording())
    runs.close()
    assert seen and all(young == 20_000 and frozen > 0 for young, frozen in seen)
    assert (gc.get_threshold(), gc.get_freeze_count()) == before
