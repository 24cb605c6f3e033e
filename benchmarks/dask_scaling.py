"""The Dask engine against PostgreSQL: 1 worker vs 2 workers, and what bounds it past that.

Run by hand (not a timed test)::

    .venv/bin/python benchmarks/dask_scaling.py                      # 40,000 users x 50 = 2 M rows
    .venv/bin/python benchmarks/dask_scaling.py --users 60000 --workers 1,2
    .venv/bin/python benchmarks/dask_scaling.py --dsn postgresql://bench@db/bench   # a real server

Synthesises one export (``weightstream synth``, the ``mixed`` scenario), starts a throwaway
PostgreSQL cluster (unless ``--dsn``; durable settings: fsync and synchronous_commit on), and
for each worker count runs :func:`weightstream.distributed.process_distributed` on a fresh
schema with a ``LocalCluster`` of that many worker processes (one thread each). The cluster is
started and warmed (numba compiled in every worker on a small file) before the clock starts.

Prints one JSON object with, per worker count:

- ``readings_per_second`` and ``seconds``: the whole run (parse and shuffle on the driver, the
  partitions on the workers, the results file written from the store);
- ``timings``: ``parse`` and ``sort`` (driver), ``filter`` and ``store`` (summed over the
  workers: deciding vs committing, worker-seconds), ``results`` (driver), and ``cluster`` (the
  wall time of the distributed part);
- ``commits`` and ``commits_per_second`` (``pg_stat_database.xact_commit``), ``wal_bytes`` and
  ``wal_bytes_per_reading`` (``pg_current_wal_lsn`` before and after);

then ``speedup`` (2 workers over 1, end to end and for the distributed part alone) and a
``projection`` past one machine from these figures: the driver's serial share (parse, shuffle,
results) bounds a single driver; the database is bounded by its commit rate and its WAL
bandwidth, given per reading here. ``cpus`` says how many cores this machine has: with the
PostgreSQL server and the driver on the same cores as the workers, two workers cannot reach
2x on a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from weightstream.config import Config
from weightstream.distributed import dask_client, process_distributed
from weightstream.store.postgres import PostgresStore


def _note(message: str) -> None:
    print(f"[dask_scaling] {message}", file=sys.stderr, flush=True)


def _synth(users: int, per_user: int, seed: int, export: Path) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "weightstream.cli", "synth", "--users", str(users),
         "--per-user", str(per_user), "--seed", str(seed), "--out", str(export)],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return round(time.perf_counter() - started, 2)


def _server_counters(dsn: str) -> tuple[int, int]:
    """(committed transactions of the database, WAL position in bytes)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT xact_commit, pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint "
            "FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def _schema_dsn(admin_dsn: str, name: str) -> str:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE".encode())
        conn.execute(f"CREATE SCHEMA {name}".encode())
    sep = "&" if "?" in admin_dsn else "?"
    return f"{admin_dsn}{sep}options=-csearch_path%3D{name}"


def one_run(
    export: Path, warm: Path, admin_dsn: str, workers: int, config: Config, work: Path
) -> dict[str, Any]:
    """One worker count: a warmed cluster, a fresh schema, the timed run."""
    with dask_client("local", workers=workers) as client:
        warm_dsn = _schema_dsn(admin_dsn, f"warm_{workers}")
        with PostgresStore(warm_dsn) as store:
            process_distributed(warm, store, warm_dsn, config, client=client)
        dsn = _schema_dsn(admin_dsn, f"bench_{workers}")
        with PostgresStore(dsn) as store:
            commits0, wal0 = _server_counters(dsn)
            started = time.perf_counter()
            summary = process_distributed(
                export, store, dsn, config, client=client, out=work / f"results-{workers}.csv"
            )
            seconds = time.perf_counter() - started
            commits1, wal1 = _server_counters(dsn)
    t = {k: round(v, 2) for k, v in summary.timings.items()}
    serial = sum(summary.timings.get(k, 0.0) for k in ("parse", "sort", "results"))
    t["cluster"] = round(seconds - serial, 2)
    rows = summary.rows
    return {
        "workers": workers,
        "rows": rows,
        "seconds": round(seconds, 2),
        "readings_per_second": round(rows / seconds),
        "cluster_readings_per_second": round(rows / max(t["cluster"], 1e-9)),
        "timings": t,
        "store_share_of_worker_time": round(
            t.get("store", 0.0) / max(t.get("store", 0.0) + t.get("filter", 0.0), 1e-9), 3
        ),
        "commits": commits1 - commits0,
        "commits_per_second": round((commits1 - commits0) / seconds, 1),
        "wal_bytes": wal1 - wal0,
        "wal_bytes_per_reading": round((wal1 - wal0) / rows, 1),
        "retries": summary.retries,
    }


def projection(runs: dict[int, dict[str, Any]], group: int) -> dict[str, Any]:
    """What bounds the engine past one machine, from the measured figures."""
    one = runs[min(runs)]
    rows = one["rows"]
    t = one["timings"]
    serial = t.get("parse", 0) + t.get("sort", 0) + t.get("results", 0)
    worker_seconds_per_reading = (t.get("filter", 0) + t.get("store", 0)) / rows
    store_per_commit = t.get("store", 0) / max(one["commits"], 1)
    return {
        "driver_serial_seconds_per_million": round(serial / rows * 1e6, 2),
        "driver_ceiling_readings_per_second": round(rows / max(serial, 1e-9)),
        "worker_seconds_per_reading_us": round(worker_seconds_per_reading * 1e6, 1),
        "readings_per_second_per_worker_core": round(1 / max(worker_seconds_per_reading, 1e-12)),
        "readings_per_commit": group,
        "store_seconds_per_commit_ms": round(store_per_commit * 1e3, 2),
        "wal_bytes_per_reading": one["wal_bytes_per_reading"],
        "db_commits_per_second_needed_at_1M_readings_per_second": round(1e6 / group),
        "db_wal_mb_per_second_at_1M_readings_per_second": round(
            one["wal_bytes_per_reading"] * 1e6 / 2**20, 1
        ),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    from weightstream.store.pg_local import TempPostgres

    counts = [int(x) for x in args.workers.split(",")]
    config = Config(processing={"commit_group_size": args.group})
    with tempfile.TemporaryDirectory(prefix="ws-dask-bench-") as tmp:
        work = Path(tmp)
        export, warm = work / "export.csv", work / "warm.csv"
        _note(f"synth {args.users * args.per_user:,} rows")
        synth_seconds = _synth(args.users, args.per_user, args.seed, export)
        _synth(40, 20, args.seed + 1, warm)
        server = None
        admin = args.dsn
        if admin is None:
            server = TempPostgres(prefix="ws-pg-bench-")
            server.start()
            admin = server.dsn()
        try:
            runs: dict[int, dict[str, Any]] = {}
            for n in counts:
                _note(f"{n} worker(s)")
                runs[n] = one_run(export, warm, admin, n, config, work)
                _note(json.dumps(runs[n]))
            same = len({(work / f"results-{n}.csv").read_bytes() for n in counts}) == 1
        finally:
            if server is not None:
                server.cleanup()
    out: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "rows": args.users * args.per_user,
        "synth_seconds": synth_seconds,
        "commit_group_size": args.group,
        "runs": [runs[n] for n in counts],
        "identical_results_files": same,
    }
    if len(counts) >= 2:
        lo, hi = runs[counts[0]], runs[counts[1]]
        out["speedup"] = round(hi["readings_per_second"] / lo["readings_per_second"], 2)
        out["cluster_speedup"] = round(
            hi["cluster_readings_per_second"] / lo["cluster_readings_per_second"], 2
        )
        out["target"] = 1.7
    out["projection"] = projection(runs, args.group)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=40_000)
    parser.add_argument("--per-user", type=int, default=50)
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--workers", default="1,2", help="worker counts, e.g. 1,2")
    parser.add_argument("--group", type=int, default=Config().processing.commit_group_size)
    parser.add_argument("--dsn", default=None, help="a PostgreSQL URL (default: a throwaway one)")
    print(json.dumps(run(parser.parse_args()), indent=1))


if __name__ == "__main__":
    main()
