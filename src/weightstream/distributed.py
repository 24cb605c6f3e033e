"""The batch engine on a Dask cluster: ``weightstream process INPUT --engine dask``.

The file is read once, by the driver, with the same reader and order as one process
(:func:`weightstream.pipeline._load`). Its readings are then shuffled on the user id: each
user goes to one of :data:`BUCKETS` buckets by a stable hash of its id (BLAKE2b, the same on
every machine and Python version), invalid rows by their line number. The buckets are grouped
into partitions, and each partition runs on a worker through the *same* batch engine as one
process (:func:`weightstream.pipeline._commit_group`, so
:func:`weightstream.engine.group.run_group`), committing to the shared PostgreSQL store.

Why this holds the single-process rules:

* A user's readings are all in one bucket, in the file's processing order, so duplicates,
  late readings (replayed into place or marked late), resets and copies are decided exactly
  as one process decides them: every rule is per user.
* Each bucket has an input position of its own in the store (``INPUT#dask-bucket-NN-of-64``),
  committed with each group in the group's transaction. A partition run again (its worker
  lost, the driver restarted) resumes every bucket where its last commit left it: no reading
  is lost or counted twice. The bucket of a user does not depend on the partition count or the
  number of workers, so a rerun may use another cluster.
* Two runs of one partition at once (a worker thought lost that was only slow) cannot both
  commit a group: the second meets the stored keys and the moved position (a conflict) and
  carries on from the stored position.
* When every bucket is done the driver commits the input's own position (all rows), so any
  later run, on one process or on a cluster, sees the input as processed. A single-process run
  stopped part-way is finished by the single-process path (it resumes by that position).

Results go to the store; the results file (or a Parquet dataset, ``--out DIR.parquet``) is
written afterwards from the store in input order, as :func:`~weightstream.pipeline.process_file`
does when it resumes.

A lost worker: the scheduler reports the partition's future as failed (``KilledWorker``, lost
data); the driver scatters the partition again and resubmits it, up to
:data:`MAX_ATTEMPTS` times. Errors of ours (:class:`~weightstream.errors.WeightstreamError`)
from a partition end the run with that error, as they would in one process.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from weightstream.clock import SYSTEM_CLOCK, Clock
from weightstream.config import Config
from weightstream.engine.results import ResultsSpill, results_lines
from weightstream.errors import ConflictError, StorageError, WeightstreamError
from weightstream.faults import FaultPoints
from weightstream.ingest import RowProblem, file_digest
from weightstream.pipeline import (
    Loaded,
    RunSummary,
    _commit_group,
    _load,
    _result_rows,
    process_file,
    write_results,
)
from weightstream.results_file import write_atomic
from weightstream.store.base import StateStore, UnitOfWork
from weightstream.store.columns import RESULTS, Kind

__all__ = [
    "BUCKETS",
    "MAX_ATTEMPTS",
    "Partition",
    "PartitionReport",
    "bucket_of",
    "bucket_position_id",
    "split_buckets",
    "run_partition",
    "process_distributed",
    "process_partitions",
    "Runner",
    "Target",
    "write_parquet",
]

#: Buckets a file's users are hashed into: the unit of resume, fixed so that a rerun on another
#: cluster finds the same buckets. 64 keeps every bucket's last, partial commit group cheap
#: and still lets up to 64 workers share one file.
BUCKETS = 64
#: How many times a partition is submitted before the run fails (a worker lost each time).
MAX_ATTEMPTS = 4


def bucket_of(user_id: str) -> int:
    """The bucket of a user: a stable hash of its id, the same on every machine.

    >>> bucket_of("user-1") == bucket_of("user-1"), 0 <= bucket_of("") < BUCKETS
    (True, True)
    """
    digest = hashlib.blake2b(user_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def bucket_position_id(input_id: str, bucket: int) -> str:
    """The store key of a bucket's input position."""
    return f"{input_id}#dask-bucket-{bucket:02d}-of-{BUCKETS}"


@dataclass(frozen=True)
class Bucket:
    """One bucket of a file: its invalid rows (by line) and its sorted valid readings."""

    number: int
    invalid: list[tuple[int, RowProblem]]
    valid: pl.DataFrame

    def __len__(self) -> int:
        return len(self.invalid) + self.valid.height


@dataclass(frozen=True)
class Target:
    """Where the workers commit: a PostgreSQL URL (``backend`` ``"postgres"``), or a SQLite
    file's path (``"sqlite"``) and the run's write gate (:mod:`weightstream.store.gate`), a
    file every worker of the run locks around its commits."""

    dsn: str
    backend: str
    gate: str | None = None


@dataclass(frozen=True)
class Partition:
    """What one task runs: some buckets of one input, and how to reach the store."""

    index: int
    input_id: str
    target: Target
    config: Config
    buckets: tuple[Bucket, ...]
    #: ``WEIGHTSTREAM_FAULT`` / ``WEIGHTSTREAM_CHAOS(_SEED)`` of the driver (crash tests).
    fault_env: Mapping[str, str] = field(default_factory=dict)
    #: The results file's cells exactly as stored (``--raw``).
    raw: bool = False

    @property
    def rows(self) -> int:
        return sum(len(b) for b in self.buckets)


@dataclass
class PartitionReport:
    """What a partition did: rows committed now, rows found committed, retries, time split."""

    index: int
    processed_now: int = 0
    resumed_from: int = 0
    retries: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    worker_pid: int = 0
    #: Every row's results-file line as the engine decided it (columns ``row`` and ``line``,
    #: formatted on the worker), or None when a bucket resumed (its earlier rows' results are
    #: only in the store).
    lines: pl.DataFrame | None = None
    #: Those rows counted (verdicts, reasons, resets, users), with ``lines``.
    counted: RunSummary | None = None


def split_buckets(entries: Loaded) -> list[Bucket]:
    """The file's rows by bucket (non-empty buckets only), each in processing order."""
    users = entries.valid.get_column("user").unique().to_list()
    by_user = pl.DataFrame(
        {"user": users, "bucket": [bucket_of(u) for u in users]},
        schema={"user": entries.valid.schema["user"], "bucket": pl.Int64},
    )
    # A left join keeps the left frame's order: each bucket's readings stay sorted.
    valid = entries.valid.join(by_user, on="user", how="left", maintain_order="left")
    parts = {
        int(key[0]): frame.drop("bucket")
        for key, frame in valid.partition_by("bucket", as_dict=True, maintain_order=True).items()
    }
    invalid: dict[int, list[tuple[int, RowProblem]]] = {}
    for line, problem in entries.invalid:
        invalid.setdefault(line % BUCKETS, []).append((line, problem))
    empty = entries.valid.clear()
    out = []
    for number in range(BUCKETS):
        bucket = Bucket(number, invalid.get(number, []), parts.get(number, empty))
        if len(bucket):
            out.append(bucket)
    return out


def partitions_of(buckets: list[Bucket], count: int) -> list[list[Bucket]]:
    """``count`` partitions of about equal rows (largest bucket first to the lightest)."""
    count = max(1, min(count, len(buckets)))
    loads = [0] * count
    groups: list[list[Bucket]] = [[] for _ in range(count)]
    for bucket in sorted(buckets, key=lambda b: (-len(b), b.number)):
        k = loads.index(min(loads))
        groups[k].append(bucket)
        loads[k] += len(bucket)
    return [sorted(g, key=lambda b: b.number) for g in groups if g]


def run_partition(partition: Partition) -> PartitionReport:
    """Run a partition's buckets through the batch engine (on a worker). Resumable."""
    from weightstream.engine.group import EngineConfig
    from weightstream.processor import Processor

    faults = FaultPoints.from_environ(partition.fault_env)
    config = partition.config
    report = PartitionReport(partition.index, worker_pid=os.getpid())
    store = _open_store(partition, faults)
    try:
        processor = Processor(store, config, faults=faults)
        engine = EngineConfig(processor)
        summary = RunSummary(input_id=partition.input_id)
        group = config.processing.commit_group_size
        frames: list[pl.DataFrame] | None = []
        for bucket in partition.buckets:
            key = bucket_position_id(partition.input_id, bucket.number)
            entries = Loaded(bucket.invalid, bucket.valid)
            total = len(entries)
            position = store.position(key)
            report.resumed_from += position
            while position < total:
                end = min(position + group, total)
                span = (position, end)
                try:
                    _commit_group(
                        processor, engine, partition.input_id, entries, span, summary,
                        faults, SYSTEM_CLOCK, position_id=key,
                    )  # fmt: skip
                except ConflictError:
                    # Another run of this partition committed the group first: go on from
                    # where the store says it is (never past a group it did not commit).
                    processor.forget()
                    stored = store.position(key)
                    if stored <= position:
                        raise
                    position = stored
                    continue
                report.processed_now += end - position
                position = end
                faults.crash_point("pipeline.group_committed")
            processor.forget()
            if frames is not None and entries.table.complete:
                frames.append(entries.table.frame())
            else:
                frames = None
        report.retries = summary.retries
        report.timings = dict(summary.timings)
        if frames:
            # The results file's lines and counts are made here, on the workers, in parallel;
            # the driver only merges them.
            frame = pl.concat(frames, how="vertical")
            report.lines = results_lines(frame, partition.raw)
            report.counted = RunSummary(input_id=partition.input_id)
            report.counted.count_results(frame)
        return report
    finally:
        store.close()


def _open_store(partition: Partition, faults: FaultPoints) -> StateStore:
    """The worker's own connection to the run's store."""
    config, target = partition.config.store, partition.target
    if target.backend == "sqlite":
        from weightstream.store.gate import WriteGate
        from weightstream.store.sqlite import SQLiteStore

        gate = None if target.gate is None else WriteGate(target.gate)
        return SQLiteStore.from_config(config, target.dsn, faults=faults, gate=gate)
    from weightstream.store.postgres import PostgresStore

    return PostgresStore.from_config(config, target.dsn, faults=faults)


@contextmanager
def dask_client(scheduler: str = "local", workers: int | None = None) -> Iterator[Any]:
    """A ``dask.distributed.Client``: a local cluster of worker processes, or ``ADDRESS``."""
    dd = _distributed()
    Client, LocalCluster = dd.Client, dd.LocalCluster
    # The scheduler and nannies of a local cluster log each worker's comings and goings at
    # INFO in this process; a run shows warnings only, as the rest of the CLI does.
    logging.getLogger("distributed").setLevel(logging.WARNING)
    if scheduler == "local":
        n = workers or os.cpu_count() or 1
        with (
            LocalCluster(
                n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0"
            ) as cluster,
            Client(cluster) as client,
        ):
            yield client
    else:
        with Client(scheduler) as client:
            yield client


def _distributed() -> Any:
    """``dask.distributed`` (imported when a run needs it; it ships no type hints)."""
    import importlib

    return importlib.import_module("dask.distributed")


def _dispatch(client: Any, partitions: list[Partition]) -> tuple[list[PartitionReport], int]:
    """Run every partition; resubmit one whose worker (or data) was lost.

    Returns the reports (by partition) and how many submissions were repeated.
    """
    as_completed = _distributed().as_completed
    attempts: dict[int, int] = {}
    pending: dict[Any, int] = {}

    def submit(k: int) -> Any:
        attempts[k] = attempts.get(k, 0) + 1
        # Right after a worker is lost the scheduler may still offer it for the data: a
        # failed scatter is tried again (the nanny restarts the worker; others take over).
        for wait in (0.1, 0.2, 0.5, 1.0, 2.0, 4.0, 8.0, 0.0):
            try:
                data = client.scatter(partitions[k], hash=False)
                break
            except OSError:  # distributed's CommClosedError is an OSError
                if not wait:
                    raise
                time.sleep(wait)
        future = client.submit(run_partition, data, pure=False, retries=0)
        pending[future] = k
        return future

    flow = as_completed([submit(k) for k in range(len(partitions))])
    reports: list[PartitionReport] = []
    resubmitted = 0
    try:
        for future in flow:
            k = pending.pop(future)
            try:
                reports.append(future.result())
            except WeightstreamError:
                raise
            except Exception as exc:  # a lost worker, lost data, a cancelled task
                if attempts[k] >= MAX_ATTEMPTS:
                    raise StorageError(
                        f"dask: partition {k} failed {attempts[k]} times; last: "
                        f"{type(exc).__name__}: {exc}"
                    ) from None
                resubmitted += 1
                flow.add(submit(k))
    finally:
        for future in list(pending):
            future.cancel()
    return sorted(reports, key=lambda r: r.index), resubmitted


def process_distributed(
    path: str | Path,
    store: StateStore,
    dsn: str,
    config: Config,
    *,
    client: Any = None,
    scheduler: str = "local",
    workers: int | None = None,
    partitions: int | None = None,
    out: str | Path | None = None,
    raw: bool = False,
    column_map: Mapping[str, str] | None = None,
    clock: Clock = SYSTEM_CLOCK,
    fault_env: Mapping[str, str] | None = None,
) -> RunSummary:
    """Process ``path`` on a Dask cluster into the PostgreSQL store at ``dsn``. Resumable.

    ``client``: an open ``dask.distributed.Client`` (else one is made from ``scheduler``:
    ``"local"`` for a local cluster of ``workers`` processes, or a scheduler address).
    ``partitions``: tasks to split the buckets into (default: 4 per worker, so a lost
    worker's share is small and the others stay busy). ``out``: the results CSV, or a Parquet
    dataset when its name ends in ``.parquet``. ``store`` is the driver's own store.
    """

    @contextmanager
    def on_dask() -> Iterator[Runner]:
        with _client_for(client, scheduler, workers) as cli:
            count = len(cli.scheduler_info().get("workers", {})) or 1
            yield Runner(lambda tasks: _dispatch(cli, tasks), count)

    return process_partitions(
        path,
        store,
        Target(dsn, "postgres"),
        config,
        on_dask,
        partitions=partitions,
        out=out,
        raw=raw,
        column_map=column_map,
        clock=clock,
        fault_env=fault_env,
    )


@dataclass(frozen=True)
class Runner:
    """How partitions run: ``dispatch`` runs them all (their reports by partition and how
    many were submitted again), on ``workers`` workers."""

    dispatch: Callable[[list[Partition]], tuple[list[PartitionReport], int]]
    workers: int


def process_partitions(
    path: str | Path,
    store: StateStore,
    target: Target,
    config: Config,
    runner: Callable[[], AbstractContextManager[Runner]],
    *,
    partitions: int | None = None,
    out: str | Path | None = None,
    raw: bool = False,
    column_map: Mapping[str, str] | None = None,
    clock: Clock = SYSTEM_CLOCK,
    fault_env: Mapping[str, str] | None = None,
) -> RunSummary:
    """Process ``path`` in bucket partitions run by ``runner`` (entered only when there is
    work, before the file is parsed, so workers start while it is). Resumable.

    The shared part of :func:`process_distributed` and
    :func:`weightstream.parallel.process_parallel`.
    """
    started = time.perf_counter()
    path = Path(path)
    input_id = file_digest(path)
    done = store.position(input_id)
    summary = RunSummary(input_id=input_id)
    decided: list[PartitionReport] | None = None
    if done:
        entries = _load(path, config, column_map, clock, summary.timings)
        if done < len(entries):
            # A single-process run stopped part-way: it resumes by the input's own position.
            return process_file(path, store, config, out=out, column_map=column_map, raw=raw)
        summary.resumed_from = done
    else:
        with runner() as run:
            entries = _load(path, config, column_map, clock, summary.timings)
            buckets = split_buckets(entries)
            # The buckets hold the rows now: only the file's size is kept.
            total = len(entries)
            del entries
            n = partitions or 4 * max(1, run.workers)
            tasks = [
                Partition(k, input_id, target, config, tuple(group), dict(fault_env or {}), raw)
                for k, group in enumerate(partitions_of(buckets, n))
            ]
            del buckets
            reports, resubmitted = run.dispatch(tasks) if tasks else ([], 0)
            del tasks
        summary.resumed_from = sum(r.resumed_from for r in reports)
        summary.processed_now = sum(r.processed_now for r in reports)
        # A partition resubmitted after its worker was lost counts as a retry, as a redone
        # commit group does.
        summary.retries = sum(r.retries for r in reports) + resubmitted
        for r in reports:
            for name, seconds in r.timings.items():
                summary.timings[name] = summary.timings.get(name, 0.0) + seconds
        if total:
            store.commit(UnitOfWork(position=(input_id, total)))
        decided = reports if all(r.lines is not None for r in reports) else None
    written = time.perf_counter()
    parquet = out is not None and str(out).endswith(".parquet")
    if not parquet and decided is not None:
        # Every row decided in this run: the results file from the lines the workers made of
        # their engine's own tables, as one process writes it (the same bytes the store gives,
        # tests/engine), put in row order.
        with ResultsSpill(config.processing.in_memory_rows, raw=raw) as spill:
            for r in decided:
                assert r.lines is not None and r.counted is not None
                summary.add_counts(r.counted)
                spill.add_lines(r.lines)
                r.lines = None
            if out is not None:
                write_atomic(Path(out), spill.write)
    elif parquet and out is not None:
        write_parquet(store, input_id, Path(out), summary=summary)
    else:  # counted, and written when asked, from the store
        write_results(store, input_id, None if out is None else Path(out), summary=summary, raw=raw)
    summary.timings["results"] = time.perf_counter() - written
    summary.seconds = time.perf_counter() - started
    return summary


@contextmanager
def _client_for(client: Any, scheduler: str, workers: int | None) -> Iterator[Any]:
    if client is not None:
        yield client
        return
    with dask_client(scheduler, workers) as made:
        yield made


_PARQUET_TYPES = {
    Kind.TEXT: pl.String,
    Kind.TIME: pl.String,
    Kind.INTEGER: pl.Int64,
    Kind.REAL: pl.Float64,
    Kind.REF: pl.Int64,
}
_PARQUET_SCHEMA = {c.file or c.name: _PARQUET_TYPES[c.kind] for c in RESULTS.file_columns}
_PARQUET_ROWS = 1_000_000


def write_parquet(
    store: StateStore, input_id: str, out: Path, *, summary: RunSummary | None = None
) -> int:
    """The input's results as a Parquet dataset (``part-NNNNN.parquet`` files, input order).

    Written to a temporary directory beside ``out`` and renamed into place: ``out`` is the
    old dataset or the new one, never a torn one. Cells are as stored (no spreadsheet
    apostrophes: Parquet is for programs); absent texts are empty strings, as in the CSV.
    """
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    rows = 0
    try:
        chunk: list[tuple[Any, ...]] = []
        part = 0

        def flush() -> None:
            nonlocal part
            frame = pl.DataFrame(chunk, schema=_PARQUET_SCHEMA, orient="row")
            frame.write_parquet(tmp / f"part-{part:05d}.parquet")
            part += 1
            chunk.clear()

        for row in _result_rows(store, input_id):
            if summary is not None:
                summary.count_row(row)
            chunk.append(row)
            rows += 1
            if len(chunk) >= _PARQUET_ROWS:
                flush()
        if chunk or part == 0:
            flush()
        for f in tmp.iterdir():
            with f.open("rb") as handle:
                os.fsync(handle.fileno())
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return rows
