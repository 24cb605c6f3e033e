"""The Dask engine (issue 16): a local two-worker cluster gives the single-process results.

Every run here is on the session's real PostgreSQL server (a schema per run) and a real
``dask.distributed.LocalCluster`` of two worker *processes*. The reference is
:func:`weightstream.pipeline.process_file` on one process with the same configuration: the
results file must be byte-identical and the stored records equal (every table, row keys and
wall-clock columns aside). A worker SIGKILLed while it runs a partition must not change that:
its partition is resubmitted, resumes from its buckets' committed positions, and no reading is
lost or counted twice.
"""

from __future__ import annotations

import itertools
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from weightstream.config import Config
from weightstream.distributed import (
    BUCKETS,
    bucket_of,
    dask_client,
    process_distributed,
    split_to_files,
)
from weightstream.ingest.columnar import read_blocks, read_columns
from weightstream.ingest.partitions import sort_readings
from weightstream.ingest.spill import Spill
from weightstream.pipeline import process_file
from weightstream.store.columns import AUDITS, LAST_GOOD, READINGS, RECOVERIES, RESULTS, STATES
from weightstream.store.postgres import PostgresStore
from weightstream.synth import write_stream
from weightstream.testing import decided

#: Small commit groups: many commits per partition, so a kill lands mid-partition.
CONFIG = Config(processing={"commit_group_size": 25})
_schemas = itertools.count(1)


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    """A local cluster of two worker processes (one thread each) for the module."""
    with dask_client("local", workers=2) as c:
        yield c


def _store(server: Any) -> tuple[PostgresStore, str]:
    schema = f"dask_{os.getpid()}_{next(_schemas)}"
    server.execute(f"CREATE SCHEMA {schema}")
    dsn = server.dsn(schema=schema)
    return PostgresStore(dsn), dsn


def _records(dsn: str, input_id: str) -> dict[str, list[Any]]:
    """Every stored record but row keys, wall-clock columns and the Dask bucket positions."""
    out: dict[str, list[Any]] = {}
    with psycopg.connect(dsn) as conn:
        for table, drop in (
            (STATES, ()),
            (READINGS, ()),
            (RESULTS, ()),
            (AUDITS, ("duration_s", "at")),
            (RECOVERIES, ("at",)),
            (LAST_GOOD, ("taken_at",)),
        ):
            cols = ", ".join(n for n in table.names if n not in drop)
            out[table.name] = sorted(conn.execute(f"SELECT {cols} FROM {table.name}"), key=repr)
        out["position"] = conn.execute(
            "SELECT position FROM input_positions WHERE input_id = %s", (input_id,)
        ).fetchall()
    return out


@pytest.fixture(scope="module")
def reference(postgres_server: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """200 users x 30 readings (every kind of trouble), processed on one process."""
    directory = tmp_path_factory.mktemp("dask-ref")
    export = directory / "export.csv"
    write_stream(200, 30, 20250216, export, directory / "truth.csv")
    store, dsn = _store(postgres_server)
    try:
        summary = process_file(export, store, CONFIG, out=directory / "single.csv")
    finally:
        store.close()
    return {
        "export": export,
        "csv": (directory / "single.csv").read_bytes(),
        "records": _records(dsn, summary.input_id),
        "summary": summary.as_dict(),
    }


def test_buckets_are_stable_and_keep_each_user_whole(reference: dict[str, Any], tmp_path: Path):
    """A user's readings are all in one bucket, in processing order; every row is in one."""
    now = _clock().now()
    whole = read_columns(reference["export"], CONFIG, now=now)
    ordered = sort_readings(whole.valid)
    with Spill(0, tmp_path) as spill:
        files = split_to_files(read_blocks(reference["export"], CONFIG, now=now), spill)
        buckets = [f.load() for f in files]
    assert sum(len(b) for b in buckets) == len(whole.invalid) + whole.valid.height
    seen: dict[str, int] = {}
    for b in buckets:
        for user in b.valid.get_column("user").unique().to_list():
            assert user not in seen and bucket_of(user) == b.number
            seen[user] = b.number
        lines = b.valid.get_column("line").to_list()
        mine = set(lines)
        assert lines == [x for x in ordered.get_column("line").to_list() if x in mine]
    assert 0 < len(buckets) <= BUCKETS


def _clock() -> Any:
    from weightstream.clock import SYSTEM_CLOCK

    return SYSTEM_CLOCK


def test_two_workers_give_the_single_process_results(
    client: Any, postgres_server: Any, reference: dict[str, Any], tmp_path: Path
):
    """Results file byte-identical, stored records equal; a rerun processes nothing."""
    store, dsn = _store(postgres_server)
    try:
        summary = process_distributed(
            reference["export"], store, dsn, CONFIG, client=client, out=tmp_path / "dask.csv"
        )
        assert (tmp_path / "dask.csv").read_bytes() == reference["csv"]
        assert _records(dsn, summary.input_id) == reference["records"]
        assert decided(summary.as_dict()) == decided(reference["summary"])
        assert summary.processed_now == summary.rows and summary.retries == 0
        again = process_distributed(
            reference["export"], store, dsn, CONFIG, client=client, out=tmp_path / "again.csv"
        )
        assert again.processed_now == 0 and again.resumed_from == again.rows
        assert (tmp_path / "again.csv").read_bytes() == reference["csv"]
        assert _records(dsn, summary.input_id) == reference["records"]
        # A single-process run afterwards sees the input as done, too.
        single = process_file(reference["export"], store, CONFIG)
        assert single.processed_now == 0
    finally:
        store.close()


def test_a_worker_killed_mid_run_changes_nothing(
    postgres_server: Any, reference: dict[str, Any], tmp_path: Path
):
    """SIGKILL one of two workers while it runs a partition: same results, nothing twice."""
    store, dsn = _store(postgres_server)
    total = reference["summary"]["rows"]
    outcome: dict[str, Any] = {}
    try:
        with dask_client("local", workers=2) as own:
            pids = own.run(os.getpid)

            def run() -> None:
                try:
                    outcome["summary"] = process_distributed(
                        reference["export"], store, dsn, CONFIG, client=own,
                        out=tmp_path / "dask.csv", partitions=8,
                    )  # fmt: skip
                except BaseException as exc:  # noqa: BLE001 - reported below
                    outcome["error"] = exc

            thread = threading.Thread(target=run)
            thread.start()
            killed = _kill_a_busy_worker(own, pids, dsn, total)
            thread.join(timeout=240)
        assert "error" not in outcome, outcome.get("error")
        summary = outcome["summary"]
        assert killed, "the run ended before a worker could be killed mid-partition"
        assert summary.retries >= 1  # the killed worker's partition was submitted again
        assert (tmp_path / "dask.csv").read_bytes() == reference["csv"]
        assert _records(dsn, summary.input_id) == reference["records"]
        assert decided(summary.as_dict()) == decided(reference["summary"])
    finally:
        store.close()


def _kill_a_busy_worker(client: Any, pids: dict[str, int], dsn: str, total: int) -> bool:
    """Once a tenth of the rows is committed, SIGKILL a worker that is running a partition."""
    deadline = time.monotonic() + 120
    with psycopg.connect(dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            done = conn.execute(
                "SELECT coalesce(sum(position), 0) FROM input_positions "
                "WHERE input_id LIKE '%%#dask-bucket-%%'"
            ).fetchone()
            committed = int(done[0]) if done else 0
            if committed >= total:
                return False
            if committed >= total // 10:
                busy = [addr for addr, keys in client.processing().items() if keys]
                if busy and busy[0] in pids:
                    os.kill(pids[busy[0]], signal.SIGKILL)
                    return True
            time.sleep(0.02)
    return False


def test_cli_engine_dask_writes_csv_and_parquet(
    postgres_server: Any, reference: dict[str, Any], tmp_path: Path, cli: Any
):
    """`process --engine dask` (CSV, then a Parquet dataset on the rerun); SQLite is refused."""
    import polars as pl

    _, dsn = _store(postgres_server)
    env_config = tmp_path / "ws.toml"
    env_config.write_text("[processing]\ncommit_group_size = 25\n", encoding="utf-8")
    run = cli(
        "process", reference["export"], "--db", dsn, "--config", env_config, "--engine", "dask",
        "--workers", "2", "--out", tmp_path / "cli.csv",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "cli.csv").read_bytes() == reference["csv"]
    assert "INFO" not in run.stderr
    again = cli(
        "process", reference["export"], "--db", dsn, "--config", env_config, "--engine", "dask",
        "--workers", "1", "--out", tmp_path / "cli.parquet", "--json",
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert '"processed_now": 0' in again.stdout
    frame = pl.read_parquet(tmp_path / "cli.parquet")
    text = pl.read_csv(tmp_path / "cli.csv", infer_schema=False)
    assert frame.columns == text.columns and frame.height == text.height
    assert frame.get_column("row").to_list() == [int(x) for x in text.get_column("row")]
    refused = cli("process", reference["export"], "--db", tmp_path / "w.db", "--engine", "dask")
    assert refused.returncode == 64 and "postgresql://" in refused.stderr
