"""The results put back in row order hold at most 25,000 lines at a time (issue 11).

Writing the results file is a file run's memory peak: :meth:`ResultsSpill.write` holds one
range of rows at a time, so the range's size is the bound.
"""

from __future__ import annotations

import io
import random
from typing import Any

import polars as pl
import pytest

from weightstream.engine.results import ResultsSpill
from weightstream.ingest.spill import Spill


def test_writing_holds_at_most_25000_lines_and_puts_every_row_in_order(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """60,000 lines added in shuffled slices come out once each, by row; no range taken
    into memory holds more than 25,000 of them."""
    seed = random.randrange(10**6)
    print(f"seed {seed}")
    rows = list(range(2, 60_002))
    random.Random(seed).shuffle(rows)
    held: list[int] = []
    take = Spill.take

    def recording_take(self: Spill, key: int) -> pl.DataFrame | None:
        part = take(self, key)
        held.append(0 if part is None else part.height)
        return part

    monkeypatch.setattr(Spill, "take", recording_take)
    with ResultsSpill(1_000, raw=False, directory=tmp_path) as spill:
        for start in range(0, len(rows), 7_000):
            chunk = pl.Series("row", rows[start : start + 7_000], dtype=pl.Int64)
            spill.add_lines(
                pl.DataFrame({"row": chunk}).with_columns(
                    pl.format("line {}", pl.col("row")).alias("line")
                )
            )
        out = io.BytesIO()
        assert spill.write(out) == 60_000
    lines = out.getvalue().decode().split("\r\n")
    assert lines[1:-1] == [f"line {r}" for r in range(2, 60_002)] and lines[-1] == ""
    assert max(held) <= 25_000, held
