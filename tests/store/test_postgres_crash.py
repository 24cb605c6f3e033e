"""The real CLI killed inside and just after a PostgreSQL commit, then rerun (H2, H3, A1).

``WEIGHTSTREAM_FAULT=point:k`` SIGKILLs the ``process`` child at the k-th hit of a store crash
point: between BEGIN and COMMIT (the server rolls the unit back when the connection drops), or
after COMMIT before the caller hears of it (the acknowledgement is lost: the rerun must not
apply that group again). The rerun must finish with the results file and stored records of an
uninterrupted run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from ..contracts.conftest import _postgres

POINTS = ["store.after_begin:2", "store.before_commit:3", "store.after_commit:2"]


def _process(export: Path, dsn: str, out: Path, fault: str | None) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEIGHTSTREAM_")}
    env["WEIGHTSTREAM_PROCESSING__COMMIT_GROUP_SIZE"] = "200"
    if fault:
        env["WEIGHTSTREAM_FAULT"] = fault
    done = subprocess.run(
        [sys.executable, "-m", "weightstream.cli", "process", str(export), "--db", dsn,
         "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    return done.returncode


def _readings(dsn: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT user_id, key, verdict, filtered_weight FROM readings ORDER BY user_id, key"
        ).fetchall()
        states = conn.execute("SELECT user_id, version FROM user_states ORDER BY 1").fetchall()
    return [*rows, *states]


@pytest.fixture(scope="module")
def clean_run(postgres_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The same export processed without interruption."""
    from weightstream.synth import write_stream

    directory = tmp_path_factory.mktemp("pg-crash")
    export = directory / "export.csv"
    write_stream(20, 40, 160, export, directory / "truth.csv")
    backend = _postgres(postgres_server)
    assert _process(export, backend.dsn, directory / "clean.csv", None) == 0  # type: ignore[arg-type]
    yield export, (directory / "clean.csv").read_bytes(), _readings(backend.dsn)  # type: ignore[arg-type]
    backend.close_all()


@pytest.mark.parametrize("fault", POINTS)
def test_killed_then_rerun_equals_clean(
    postgres_server: Any, clean_run: Any, tmp_path: Path, fault: str
):
    """Killed at the point: nothing half-stored; the rerun completes exactly once."""
    export, clean_csv, clean_rows = clean_run
    backend = _postgres(postgres_server)
    try:
        dsn = backend.dsn
        assert _process(export, dsn, tmp_path / "r.csv", fault) == -9  # type: ignore[arg-type]
        assert _process(export, dsn, tmp_path / "r.csv", None) == 0  # type: ignore[arg-type]
        assert (tmp_path / "r.csv").read_bytes() == clean_csv
        assert _readings(dsn) == clean_rows  # type: ignore[arg-type]
    finally:
        backend.close_all()
