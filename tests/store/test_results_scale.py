"""Reading an input's results back from SQLite costs the same per row however many commit
groups wrote them (a resumed run's results file, ``write_results``, reads them all).

Measured in SQLite's own virtual-machine instructions (a progress handler called every 100),
which do not depend on the machine's speed or load. With the input's number looked up inside
the WHERE clause, SQLite did not push it into ``results_full``'s two arms, and for each
reading row it walked every earlier span of the table: about 430 instructions a row with 99
spans and 790 with 197 (96 with the number bound), and a million-row input took 92 s to
count.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from weightstream.config import Config
from weightstream.pipeline import process_file
from weightstream.store.sqlite import SQLiteStore
from weightstream.synth import write_stream

SEED = 5


def _per_row(tmp_path: Path, users: int) -> tuple[float, float, float]:
    """VM instructions (in hundreds) a row of each read of an input's results, with
    commit groups of 10 rows (one span each)."""
    export = tmp_path / f"export-{users}.csv"
    write_stream(users, 25, SEED, export, tmp_path / f"truth-{users}.csv")
    with SQLiteStore(tmp_path / f"{users}.db") as store:
        summary = process_file(export, store, Config(processing={"commit_group_size": 10}))
        spans = store.connection.execute("SELECT count(*) FROM input_spans").fetchone()[0]
        assert spans >= users * 25 // 10 - 5  # most groups wrote a span
        counted = [0]

        def tick() -> int:
            counted[0] += 1
            return 0

        out = []
        for read in (
            lambda: list(store.iter_result_rows(summary.input_id)),
            lambda: list(store.results_for_input(summary.input_id)),
            lambda: [f.height for f in store.result_frames(summary.input_id, 300)],
        ):
            counted[0] = 0
            store.connection.set_progress_handler(tick, 100)
            read()
            store.connection.set_progress_handler(None, 0)
            out.append(counted[0] / summary.rows)
        return out[0], out[1], out[2]


def test_reading_results_back_is_linear_in_the_input(tmp_path: Path) -> None:
    small = _per_row(tmp_path, 40)  # 1,000 rows, ~100 spans
    large = _per_row(tmp_path, 80)  # 2,000 rows, ~200 spans
    for a, b in zip(small, large, strict=True):
        assert b == pytest.approx(a, rel=0.15), (small, large)
        assert a < 2, small  # under 200 instructions a row


def test_results_file_from_frames_equals_first_run_and_row_path(tmp_path: Path) -> None:
    """The results file a resumed run writes from the store's frames is byte for byte the
    file the first run wrote, and the one the row path (``csv.writer``) writes; so are the
    counts. Raw and neutralised alike (the export has every kind of trouble)."""
    from weightstream.pipeline import RunSummary, write_results

    class RowsOnly:  # the store seen through the ResultRows path alone
        def __init__(self, store: SQLiteStore) -> None:
            self.iter_result_rows = store.iter_result_rows

    export = tmp_path / "export.csv"
    write_stream(60, 20, SEED, export, tmp_path / "truth.csv")
    with SQLiteStore(tmp_path / "r.db") as store:
        first = process_file(export, store, Config(), out=tmp_path / "first.csv")
        for raw in (False, True):
            by_frames, by_rows = RunSummary(first.input_id), RunSummary(first.input_id)
            write_results(store, first.input_id, tmp_path / "f.csv", summary=by_frames, raw=raw)
            write_results(
                RowsOnly(store),  # type: ignore[arg-type]
                first.input_id, tmp_path / "r.csv", summary=by_rows, raw=raw,
            )  # fmt: skip
            assert (tmp_path / "f.csv").read_bytes() == (tmp_path / "r.csv").read_bytes()
            if not raw:
                assert (tmp_path / "f.csv").read_bytes() == (tmp_path / "first.csv").read_bytes()
            assert by_frames.as_dict() == by_rows.as_dict()
            assert by_frames.rows == first.rows and by_frames.verdicts == first.verdicts
