"""The engine on local worker processes (``process --engine processes``) gives the
single-process results, on SQLite and on PostgreSQL, and survives a crash in a worker.

The reference is :func:`weightstream.pipeline.process_file` on one process with the same
configuration: the results file must be byte-identical and the stored records equal (row
keys, wall-clock columns and the buckets' own positions aside).
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import tempfile
import threading
from contextlib import nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import psycopg
import pytest

from weightstream import distributed
from weightstream.config import Config
from weightstream.distributed import BUCKETS
from weightstream.engine.content_keys import with_content_keys
from weightstream.errors import StorageError
from weightstream.ingest import columnar
from weightstream.ingest.columnar import read_blocks, read_columns
from weightstream.ingest.partitions import sort_readings
from weightstream.ingest.spill import Spill
from weightstream.parallel import process_parallel
from weightstream.pipeline import process_file
from weightstream.store import codec
from weightstream.store.base import UnitOfWork
from weightstream.store.gate import WriteGate
from weightstream.store.postgres import PostgresStore
from weightstream.store.sqlite import SQLiteStore
from weightstream.synth import write_stream
from weightstream.testing import decided

CONFIG = Config(processing={"commit_group_size": 25})
_schemas = itertools.count(1)

_QUERIES = {
    "states": f"SELECT {', '.join(codec.STATE_COLUMNS)} FROM user_states",
    "readings": f"SELECT {', '.join(codec.READING_COLUMNS)} FROM readings",
    "results": "SELECT row, reading_id, user_id, verdict, reason, message, ts, source, "
    "weight_kg, filtered_weight, trend_kg_week, std_kg, reset_type, reset_outcome, quality, "
    "q_innovation, q_rate, q_source, quality_components, offset_kg FROM results_full",
    "audits": "SELECT user_id, reading_id, reset_type, trigger, outcome, failed_operation, "
    "fallback FROM reset_audit",
    "positions": "SELECT input_id, position FROM input_positions "
    "WHERE input_id NOT LIKE '%#dask-bucket-%'",
}


def _sqlite_records(db: Path) -> dict[str, list[Any]]:
    with SQLiteStore(db, create=False) as store:
        return {
            name: sorted((tuple(r) for r in store.connection.execute(sql)), key=repr)
            for name, sql in _QUERIES.items()
        }


def _postgres_records(dsn: str) -> dict[str, list[Any]]:
    # PostgreSQL keeps results in one table (no results_full view): the same columns.
    queries = dict(_QUERIES, results=_QUERIES["results"].replace("results_full", "results"))
    with psycopg.connect(dsn) as conn:
        return {
            name: sorted((tuple(r) for r in conn.execute(sql)), key=repr)
            for name, sql in queries.items()
        }


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """200 users x 30 readings, every kind of trouble."""
    directory = tmp_path_factory.mktemp("parallel")
    path = directory / "export.csv"
    write_stream(200, 30, 20250216, path, directory / "truth.csv")
    return path


@pytest.fixture(scope="module")
def reference(export: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The export processed on one process into SQLite."""
    directory = tmp_path_factory.mktemp("parallel-ref")
    with SQLiteStore(directory / "single.db") as store:
        summary = process_file(export, store, CONFIG, out=directory / "single.csv")
    return {
        "csv": (directory / "single.csv").read_bytes(),
        "records": _sqlite_records(directory / "single.db"),
        "summary": summary.as_dict(),
    }


def test_two_workers_on_sqlite_give_the_single_process_results(
    export: Path, reference: dict[str, Any], tmp_path: Path
):
    """Results file byte-identical, stored records equal; a rerun processes nothing."""
    db = tmp_path / "parallel.db"
    with SQLiteStore(db) as store:
        summary = process_parallel(export, store, CONFIG, workers=2, out=tmp_path / "p.csv")
        assert summary.processed_now == summary.rows == reference["summary"]["rows"]
        assert decided(summary.as_dict()) == decided(reference["summary"])
        again = process_parallel(export, store, CONFIG, workers=2, out=tmp_path / "again.csv")
        assert again.processed_now == 0 and again.resumed_from == again.rows
        # A single-process run afterwards sees the input as done, too.
        assert process_file(export, store, CONFIG).processed_now == 0
    assert (tmp_path / "p.csv").read_bytes() == reference["csv"]
    assert (tmp_path / "again.csv").read_bytes() == reference["csv"]
    assert _sqlite_records(db) == reference["records"]
    with SQLiteStore(db, create=False) as store:
        buckets = store.connection.execute(
            "SELECT count(*) FROM input_positions WHERE input_id LIKE '%#dask-bucket-%'"
        ).fetchone()[0]
        assert 0 < buckets <= BUCKETS
        assert store.integrity_check() == "ok"


def test_two_workers_on_postgres_give_the_single_process_results(
    export: Path, reference: dict[str, Any], postgres_server: Any, tmp_path: Path
):
    """The same engine on PostgreSQL (no gate: the workers commit side by side)."""
    schema = f"parallel_{os.getpid()}_{next(_schemas)}"
    postgres_server.execute(f"CREATE SCHEMA {schema}")
    dsn = postgres_server.dsn(schema=schema)
    with PostgresStore(dsn) as store:
        summary = process_parallel(
            export, store, CONFIG, dsn=dsn, workers=2, partitions=3, out=tmp_path / "pg.csv"
        )
    assert (tmp_path / "pg.csv").read_bytes() == reference["csv"]
    assert decided(summary.as_dict()) == decided(reference["summary"])
    assert _postgres_records(dsn) == reference["records"]


def test_a_worker_crash_ends_the_run_and_a_rerun_finishes_it_exactly(
    export: Path, reference: dict[str, Any], tmp_path: Path
):
    """A worker killed right after a commit: the run fails with a typed error, nothing
    uncommitted is stored, and running again resumes bucket by bucket to the same results."""
    db = tmp_path / "crash.db"
    with SQLiteStore(db) as store:
        with pytest.raises(StorageError, match="worker process of the run died"):
            process_parallel(
                export, store, CONFIG, workers=2, out=tmp_path / "crash.csv",
                fault_env={"WEIGHTSTREAM_FAULT": "pipeline.group_committed:7"},
            )  # fmt: skip
        assert not (tmp_path / "crash.csv").exists()
        stored = store.connection.execute(
            "SELECT count(*), coalesce(sum(position), 0) FROM input_positions"
        ).fetchone()
        assert stored[0] >= 1 and 0 < stored[1] < reference["summary"]["rows"]
        summary = process_parallel(export, store, CONFIG, workers=2, out=tmp_path / "rerun.csv")
        assert summary.resumed_from > 0
        assert summary.resumed_from + summary.processed_now == summary.rows
    assert (tmp_path / "rerun.csv").read_bytes() == reference["csv"]
    assert _sqlite_records(db) == reference["records"]


def test_a_memory_store_is_refused(export: Path):
    from weightstream.testing import MemoryStore

    with pytest.raises(StorageError, match="cannot be shared by worker processes"):
        process_parallel(export, MemoryStore(), CONFIG, workers=2)


def test_a_held_gate_holds_a_commit_until_it_is_released(tmp_path: Path):
    """The gate is exclusive: a commit waits in the kernel while another holder has it."""
    gate_path = tmp_path / "write.gate"
    other = WriteGate(gate_path)
    with SQLiteStore(tmp_path / "g.db", gate=WriteGate(gate_path)) as store:
        done = threading.Event()

        def commit() -> None:
            store.commit(UnitOfWork(position=("input-1", 5)))
            done.set()

        with other:
            worker = threading.Thread(target=commit)
            worker.start()
            assert not done.wait(0.3), "the commit went through a held gate"
        assert done.wait(10)
        worker.join()
        assert store.position("input-1") == 5
    other.close()


def _cli(*args: str) -> Any:
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "weightstream.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_cli_engine_processes_writes_the_single_process_results_file(
    export: Path, reference: dict[str, Any], tmp_path: Path
):
    """``process --engine processes`` with the same configuration writes the same file."""
    config = tmp_path / "ws.toml"
    config.write_text("[processing]\ncommit_group_size = 25\n")
    done = _cli(
        "process", str(export), "--db", str(tmp_path / "cli.db"), "--out",
        str(tmp_path / "cli.csv"), "--config", str(config), "--engine", "processes",
        "--workers", "2", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "cli.csv").read_bytes() == reference["csv"]
    bad = _cli("process", str(export), "--db", str(tmp_path / "x.db"), "--engine", "processes",
               "--workers", "0")  # fmt: skip
    assert bad.returncode != 0 and "--workers takes a number of at least 1" in bad.stderr
    assert not (tmp_path / "x.db").exists()


def test_one_process_refuses_an_input_the_workers_started(
    export: Path, reference: dict[str, Any], tmp_path: Path
):
    """After a crashed run on workers, a single-process run refuses the input (it would judge
    the committed readings duplicates) and stores nothing; the workers then finish it."""
    db = tmp_path / "mixed.db"
    with SQLiteStore(db) as store:
        with pytest.raises(StorageError):
            process_parallel(
                export, store, CONFIG, workers=2,
                fault_env={"WEIGHTSTREAM_FAULT": "pipeline.group_committed:3"},
            )  # fmt: skip
        before = _sqlite_records(db)
        with pytest.raises(StorageError, match="resume it with the same engine"):
            process_file(export, store, CONFIG, out=tmp_path / "single.csv")
        assert _sqlite_records(db) == before and not (tmp_path / "single.csv").exists()
        process_parallel(export, store, CONFIG, workers=2, out=tmp_path / "done.csv")
    assert (tmp_path / "done.csv").read_bytes() == reference["csv"]


def test_buckets_split_on_disk_hold_each_bucket_s_rows_in_processing_order(
    export: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The driver splits the file block by block into bucket files, and the worker that
    loads a bucket sorts it: every bucket gets exactly the invalid rows (in line order) and
    the readings (in processing order) of its users and lines, as cut from the whole file
    read and sorted at once. Small blocks and splits, so that a bucket's rows come from many
    of each."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    monkeypatch.setattr(distributed, "_SPLIT_ROWS", 700)
    whole = read_columns(export, CONFIG, now=now)
    ordered = sort_readings(whole.valid)
    blocks = read_blocks(export, CONFIG, now=now, block_bytes=64 * 1024)
    with Spill(0, tmp_path) as spill:
        on_disk = distributed.split_to_files(blocks, spill)
        assert sum(len(b) for b in on_disk) == len(whole.invalid) + whole.valid.height
        for files in on_disk:
            loaded = files.load()
            n = files.number
            assert len(files) == len(loaded.invalid) + loaded.valid.height
            assert loaded.invalid == [(line, p) for line, p in whole.invalid if line % BUCKETS == n]
            mine = ordered.filter(
                pl.col("user").map_elements(distributed.bucket_of, return_dtype=pl.Int64) == n
            )
            # Each reading with its content key, made for the whole bucket.
            assert loaded.valid.equals(with_content_keys(mine))
    assert whole.invalid and len(on_disk) > 1  # the export has invalid rows and many buckets


def test_the_local_engine_never_holds_the_whole_file(
    export: Path, reference: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The driver of ``--engine processes`` reads the file block by block: reading it whole
    fails the run here; the results are still the reference."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the local engine's driver read the whole file at once")

    # Wherever the whole-file reader is reachable from, as its module's attribute or a name
    # imported into another module.
    for module in list(sys.modules.values()):
        if getattr(module, "__name__", "").startswith("weightstream") and hasattr(
            module, "read_columns"
        ):
            monkeypatch.setattr(module, "read_columns", refuse)
    assert columnar.read_columns is refuse
    with SQLiteStore(tmp_path / "bounded.db") as store:
        process_parallel(export, store, CONFIG, workers=1, out=tmp_path / "b.csv")
    assert (tmp_path / "b.csv").read_bytes() == reference["csv"]


def test_a_killed_run_s_scratch_is_removed_by_the_next_run(
    export: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The scratch of a run whose driver was killed (buckets and lines, about twice the file)
    is removed by the next run of the engine; a live run's scratch is left alone, and the
    run removes its own."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    dead = scratch / f"weightstream-run-{int(done.stdout)}-abc"
    (dead / "weightstream-spill-1-x").mkdir(parents=True)
    (dead / "weightstream-spill-1-x" / "0.arrows").write_bytes(b"x")
    live = scratch / f"weightstream-run-{os.getpid()}-def"
    live.mkdir()
    with SQLiteStore(tmp_path / "s.db") as store:
        process_parallel(export, store, CONFIG, workers=1)
    assert sorted(p.name for p in scratch.iterdir()) == [live.name]


def test_a_bucket_decided_chunk_by_chunk_gives_the_single_process_results(
    export: Path, reference: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A worker decides a bucket a chunk of rows at a time (each with its own results
    table, so its memory does not grow with the bucket); chunks of two commit groups here,
    partitions run in this process: the results file and every record are the reference's."""
    monkeypatch.setattr(distributed, "_CHUNK_ROWS", 60)  # 2 groups of 25 a chunk

    def in_this_process(
        tasks: list[distributed.Partition], sink: distributed.Sink
    ) -> tuple[list[distributed.PartitionReport], int]:
        reports = [distributed.run_partition(task) for task in tasks]
        for report in reports:
            sink(report)
        return reports, 0

    db = tmp_path / "chunks.db"
    scratch = tmp_path / "scratch"
    scratch.mkdir()

    def run(store: SQLiteStore, out: Path) -> Any:
        return distributed.process_partitions(
            export,
            store,
            distributed.Target(str(db), "sqlite"),
            CONFIG,
            lambda: nullcontext(distributed.Runner(in_this_process, 1)),
            scratch=scratch,
            workers_read_scratch=True,
            out=out,
        )

    with SQLiteStore(db) as store:
        summary = run(store, tmp_path / "chunks.csv")
        # Every bucket's position is its whole: the buckets, run again, decide nothing.
        store.connection.execute(
            "DELETE FROM input_positions WHERE input_id NOT LIKE '%#dask-bucket-%'"
        )
        again = run(store, tmp_path / "again.csv")
    assert again.processed_now == 0 and again.resumed_from == summary.rows
    assert (tmp_path / "chunks.csv").read_bytes() == reference["csv"]
    assert (tmp_path / "again.csv").read_bytes() == reference["csv"]
    assert decided(summary.as_dict()) == decided(reference["summary"])
    assert _sqlite_records(db) == reference["records"]
