"""The results file: formulas neutralised, atomic, typed failures, no temp file left (issue 10).

Each test goes through ``pipeline.write_results`` (the function the pipeline and the CLI call)
with small stand-in stores, so it ran on main before ``results_file`` existed.
"""

from __future__ import annotations

import csv
import errno
import os
import signal
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest

from weightstream import results_file
from weightstream.errors import StorageError, StorageFullError, exit_code_for
from weightstream.model import Result, Verdict
from weightstream.pipeline import RESULT_FIELDS, write_results

HOSTILE = ["=HYPERLINK(\"http://x\")", "+1+1", "-2+3", "@SUM(A1)", "\tTAB", "\rCR"]


class RowStore:
    """Hands out ready results-file rows (the SQLite store's fast path)."""

    def __init__(self, rows: list[tuple[object, ...]]) -> None:
        self.rows = rows

    def iter_result_rows(self, input_id: str):
        yield from self.rows


class ResultStore:
    """Hands out ``Result`` values (any other store); numbers become text on the way."""

    def __init__(self, results: list[Result]) -> None:
        self.results = results

    def results_for_input(self, input_id: str):
        yield from self.results


def _row(i: int, text: str, trend: float = -0.5) -> tuple[object, ...]:
    return (i, text, text, "accepted", "ok", text, "2024-01-01T00:00:00+00:00", text,
            80.0, 79.5, trend, 0.7, "", "", 0.9)


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


TEXT = [f for f in RESULT_FIELDS if f not in results_file.NUMERIC_FIELDS]


def test_formula_cells_in_text_columns_get_an_apostrophe(tmp_path: Path) -> None:
    """Case: cells beginning with = + - @ TAB or CR were written unescaped into the results
    CSV. Now every such cell of a text column starts with an apostrophe."""
    out = tmp_path / "results.csv"
    write_results(RowStore([_row(i + 2, h) for i, h in enumerate(HOSTILE)]), "in", out)
    rows = _read(out)
    assert len(rows) == len(HOSTILE)
    for row, hostile in zip(rows, HOSTILE, strict=True):
        for name in ("reading_id", "user_id", "message", "source"):
            assert row[name] == "'" + hostile, (name, row[name])
        assert row["verdict"] == "accepted"  # harmless text is written as it is


def test_numeric_columns_keep_negative_numbers(tmp_path: Path) -> None:
    """A negative trend stays a number, whether the store gives floats or (as `Result` values
    written by repr) text: numeric columns are never neutralised."""
    out = tmp_path / "results.csv"
    write_results(RowStore([_row(2, "u", trend=-0.5)]), "in", out)
    assert _read(out)[0]["trend_kg_week"] == "-0.5"
    result = Result("r1", "-user", Verdict.ACCEPTED, row=2,
                    timestamp=datetime(2024, 1, 1, tzinfo=UTC), source="=src", weight_kg=80.0,
                    filtered_weight=80.0, trend_kg_week=-0.25, std_kg=0.5, quality=1.0)
    write_results(ResultStore([result]), "in", out)
    row = _read(out)[0]
    assert (row["trend_kg_week"], row["user_id"], row["source"]) == ("-0.25", "'-user", "'=src")
    assert float(row["trend_kg_week"]) == -0.25


def test_raw_keeps_every_cell_as_stored(tmp_path: Path) -> None:
    """`raw=True` (`process --raw`) writes formula-like cells unchanged, for programs."""
    out = tmp_path / "results.csv"
    write_results(RowStore([_row(i + 2, h) for i, h in enumerate(HOSTILE)]), "in", out, raw=True)
    assert [r["user_id"] for r in _read(out)] == HOSTILE


def test_a_full_disk_is_a_typed_error_and_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    """Case: `--out` on a full disk failed with a traceback (exit 1). Written to /dev/full the
    results file now fails with StorageFullError (exit 73), one line naming the file; the old
    file is untouched and no temporary file is left."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    out = tmp_path / "results.csv"
    out.write_text("old\n")
    monkeypatch.setattr(results_file, "_create_temp",
                        lambda tmp: os.open("/dev/full", os.O_WRONLY))
    rows = [_row(i, f"user-{i}") for i in range(2, 2000)]
    with pytest.raises(StorageFullError) as caught:
        write_results(RowStore(rows), "in", out)
    message = str(caught.value)
    assert exit_code_for(caught.value) == 73
    assert "results.csv" in message and "\n" not in message
    assert "80.0" not in message and "79.5" not in message  # no weights in errors
    assert out.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv"]


def test_an_io_error_is_a_storage_error_exit_74(tmp_path: Path, monkeypatch) -> None:
    """An I/O error other than a full disk is StorageError (exit 74), not a raw OSError."""
    def broken(tmp: Path) -> int:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(results_file, "_create_temp", broken)
    with pytest.raises(StorageError) as caught:
        write_results(RowStore([_row(2, "u")]), "in", tmp_path / "r.csv")
    assert exit_code_for(caught.value) == 74
    assert not isinstance(caught.value, StorageFullError)


def test_a_fifo_target_is_refused_and_left_a_fifo(tmp_path: Path) -> None:
    """I10 on the library path too: a target that is not a regular file is never replaced."""
    fifo = tmp_path / "results.csv"
    os.mkfifo(fifo)
    with pytest.raises(StorageError, match="not a regular file"):
        write_results(RowStore([_row(2, "u")]), "in", fifo)
    assert fifo.is_fifo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv"]


_KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from weightstream.pipeline import write_results

    out, signame, at = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])

    class Store:
        def iter_result_rows(self, input_id):
            for i in range(2, 100_000):
                if i == at:  # the signal arrives while the file is half written
                    os.kill(os.getpid(), getattr(signal, signame))
                yield (i, "r", "u", "accepted", "ok", "", "", "s", 80.0, 80.0, 0.0, 0.5,
                       "", "", 1.0)

    write_results(Store(), "in", out)
    """
)


@pytest.mark.parametrize(("signame", "at"), [("SIGTERM", 3), ("SIGTERM", 5000), ("SIGINT", 500)])
def test_a_signal_during_the_write_leaves_no_temporary_file(
    tmp_path: Path, signame: str, at: int
) -> None:
    """Case: a SIGTERM during the results write left `.NAME.tmp-PID` behind. Now the temporary
    file is removed, the old results file is untouched, and the process still dies of SIGTERM
    (SIGINT: KeyboardInterrupt, exit non-zero)."""
    out = tmp_path / "results.csv"
    out.write_text("old\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEIGHTSTREAM_")}
    proc = subprocess.run([sys.executable, "-c", _KILLER, str(out), signame, str(at)],
                          capture_output=True, text=True, env=env, timeout=60, check=False)
    if signame == "SIGTERM":
        assert proc.returncode == -signal.SIGTERM, (proc.returncode, proc.stderr)
    else:
        assert proc.returncode != 0 and "KeyboardInterrupt" in proc.stderr
    assert out.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv"]


def test_output_path_problem_catches_links_and_side_files(tmp_path: Path) -> None:
    """A symlink or hard link to the database, or its -wal, is refused; a new file is fine."""
    db, export = tmp_path / "ws.db", tmp_path / "in.csv"
    db.write_bytes(b"x")
    export.write_text("a\n")
    keep = results_file.protected_paths(export, db)
    (tmp_path / "sym.csv").symlink_to(db)
    os.link(export, tmp_path / "hard.csv")
    for name, what in [("sym.csv", "the database"), ("hard.csv", "the input file"),
                       ("ws.db-wal", "the database"), ("ws.db-journal", "the database")]:
        problem = results_file.output_path_problem(tmp_path / name, keep=keep)
        assert problem is not None and what in problem, (name, problem)
    assert results_file.output_path_problem(tmp_path / "new.csv", keep=keep) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hard.csv", "in.csv", "sym.csv",
                                                          "ws.db"]
