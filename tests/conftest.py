"""Shared fixtures: small synthetic exports (with truth), a CLI runner, a database dumper."""

from __future__ import annotations

import csv
import os
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from weightstream.synth import write_stream

#: Seed of the shared synthetic exports (printed by the tests that use randomness).
SYNTH_SEED = 20250101


@dataclass(frozen=True)
class Export:
    """A synthetic export on disk, its truth file, and how many data rows it has."""

    path: Path
    truth: Path
    rows: int

    def truth_rows(self) -> list[dict[str, str]]:
        """The truth file's rows; row i is about data line i + 2 of the export."""
        with self.truth.open(newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))


def _make_export(directory: Path, users: int, per_user: int, seed: int) -> Export:
    path, truth = directory / "export.csv", directory / "truth.csv"
    rows = write_stream(users, per_user, seed, path, truth)
    return Export(path, truth, rows)


@pytest.fixture(scope="session")
def synth_export(tmp_path_factory: pytest.TempPathFactory) -> Export:
    """60 users x 30 readings of the ``mixed`` scenario (every kind of trouble), seeded."""
    return _make_export(tmp_path_factory.mktemp("synth"), 60, 30, SYNTH_SEED)


@pytest.fixture(scope="session")
def small_export(tmp_path_factory: pytest.TempPathFactory) -> Export:
    """8 users x 20 readings: small enough for many tiny commit groups."""
    return _make_export(tmp_path_factory.mktemp("small"), 8, 20, SYNTH_SEED + 1)


@dataclass(frozen=True)
class CliResult:
    returncode: int
    stdout: str
    stderr: str


def run_cli(*args: str | os.PathLike[str], cwd: Path | None = None) -> CliResult:
    """Run ``python -m weightstream.cli ARGS`` in a child process (not a terminal)."""
    # No COLUMNS: rich then wraps at 80, which is what a one-line error message must survive.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("WEIGHTSTREAM_") and k not in ("COLUMNS", "LINES")}
    env["PYTHONHASHSEED"] = "0"
    proc = subprocess.run(
        [sys.executable, "-m", "weightstream.cli", *map(str, args)],
        capture_output=True, text=True, cwd=cwd, env=env, timeout=120, check=False,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture(scope="session")
def cli() -> Callable[..., CliResult]:
    """The real CLI in a child process: ``cli("process", path, "--db", db)``."""
    return run_cli


def run_cli_in_process(*args: str | os.PathLike[str]) -> CliResult:
    """The same CLI through typer's CliRunner, in this process (fast; for cheap commands).

    ``process`` configures the root logger; its handlers and level are restored afterwards so
    that no other test sees a handler bound to the runner's closed stream.
    """
    import logging

    from typer.testing import CliRunner

    from weightstream.cli import app

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        res = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
                handler.close()
        root.setLevel(level)
    return CliResult(res.exit_code, res.stdout, res.stderr)


@pytest.fixture(scope="session")
def cli_fast() -> Callable[..., CliResult]:
    """``cli_fast("state", user, "--db", db)``: the CLI in-process (exit code, stdout, stderr)."""
    return run_cli_in_process


def dump_db(path: Path, exclude: Mapping[str, Iterable[str]] | None = None) -> dict[str, list]:
    """Every table's rows (in rowid order), with the ``exclude``d columns blanked.

    Wall-clock columns that legitimately differ between two runs are what ``exclude`` is for.
    """
    skip = {table: set(cols) for table, cols in (exclude or {}).items()}
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [n for (n,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        out: dict[str, list] = {}
        for table in tables:
            cur = conn.execute(f'SELECT * FROM "{table}" ORDER BY rowid')
            names = [d[0] for d in cur.description]
            drop = skip.get(table, set())
            out[table] = [
                tuple(None if n in drop else v for n, v in zip(names, row, strict=True))
                for row in cur
            ]
        return out
    finally:
        conn.close()


def iterdump(path: Path) -> list[str]:
    """``sqlite3.Connection.iterdump`` of the database: schema and every row, as SQL text."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


#: Columns holding wall-clock times or durations, which differ between otherwise equal runs.
VOLATILE_COLUMNS: dict[str, tuple[str, ...]] = {
    "schema_migrations": ("applied_at",),
    "input_positions": ("updated_at",),
    "reset_audit": ("duration_s", "at"),
    "last_good_states": ("taken_at",),
    "recovery_attempts": ("at",),
}


@pytest.fixture(scope="session")
def db_dump() -> Callable[..., dict[str, list]]:
    """``db_dump(path, exclude=VOLATILE_COLUMNS)``: every table of a SQLite store."""
    return dump_db


@pytest.fixture(scope="session")
def volatile_columns() -> dict[str, tuple[str, ...]]:
    return VOLATILE_COLUMNS


@pytest.fixture(scope="session")
def db_iterdump() -> Callable[[Path], list[str]]:
    return iterdump


def read_results(path: Path) -> list[dict[str, str]]:
    """A results CSV as dicts."""
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="session")
def results_of() -> Callable[[Path], list[dict[str, str]]]:
    return read_results


@pytest.fixture
def spill_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``$TMPDIR`` of the test: where spill directories are made (and must be gone after)."""
    where = tmp_path / "tmpdir"
    where.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(where))
    return where


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server for the session: a throwaway cluster, stopped and removed after.

    ``initdb`` in a temporary directory, ``pg_ctl start`` on a unix socket there (no TCP port);
    as root, run as the ``postgres`` system user (``weightstream.store.pg_local``). Tests make
    a schema or a database of their own on it (``server.dsn(dbname, schema)``).
    """
    from weightstream.store.pg_local import TempPostgres

    server = TempPostgres()
    try:
        server.start()
        yield server
    finally:
        server.cleanup()
