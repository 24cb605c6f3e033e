"""The batch engine on a Dask cluster: ``weightstream process INPUT --engine dask``.

The file is read once, by the driver, block by block with the same reader as one process
(:func:`weightstream.ingest.columnar.read_blocks`), and its rows are shuffled on the user id
as they are read (:func:`split_to_files`): each user goes to one of :data:`BUCKETS` buckets by
a stable hash of its id (BLAKE2b, the same on every machine and Python version), invalid rows
by their line number, into files of the driver's scratch directory. A bucket is sorted into
the processing order of one process (:data:`~weightstream.ingest.partitions.ORDER_KEY`) when
it is loaded. The buckets are grouped into partitions, and each partition runs on a worker
through the *same* batch engine as one process (:func:`weightstream.pipeline._commit_group`,
so :func:`weightstream.engine.group.run_group`), committing to the shared PostgreSQL store.
The driver reads a partition's buckets from its disk just before shipping it, and merges the
results lines of each report as it arrives, so it never holds the file.

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

Results go to the store. The results file is written from the lines the workers made (or,
when a bucket resumed, from the store in input order, as
:func:`~weightstream.pipeline.process_file` does when it resumes); a Parquet dataset (``--out
DIR.parquet``) is written from the store.

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
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import polars as pl

from weightstream.clock import SYSTEM_CLOCK, Clock
from weightstream.config import Config
from weightstream.engine.content_keys import with_content_keys
from weightstream.engine.results import ResultsSpill, results_lines
from weightstream.errors import ConflictError, StorageError, WeightstreamError
from weightstream.faults import FaultPoints
from weightstream.heap import long_lived_heap
from weightstream.ingest import RowProblem, file_digest
from weightstream.ingest.columnar import VALID_SCHEMA, Block, read_blocks
from weightstream.ingest.partitions import (
    invalid_frame,
    invalid_problems,
    sort_readings,
)
from weightstream.ingest.spill import Spill, read_key_file, remove_stale
from weightstream.pipeline import (
    Loaded,
    RunSummary,
    _commit_group,
    _result_rows,
    cut,
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
    "split_to_files",
    "BucketFiles",
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
#: Rows of a file split into buckets at a time (:func:`split_to_files`).
_SPLIT_ROWS = 50_000
#: Rows of a bucket a worker decides with one results table (rounded to commit groups).
_CHUNK_ROWS = 50_000
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

    def load(self) -> Bucket:
        return self


@dataclass(frozen=True)
class BucketFiles:
    """One bucket of a file kept on this machine's disk (:func:`split_to_files`): its rows'
    count and the spill files of its invalid rows and its readings, read by the worker
    that runs it (:meth:`load`), so the driver never holds the file."""

    number: int
    rows: int
    invalid_file: str | None
    valid_file: str | None

    def __len__(self) -> int:
        return self.rows

    def load(self) -> Bucket:
        """The bucket's rows, its readings sorted into processing order."""
        invalid = (
            [] if self.invalid_file is None else invalid_problems(read_key_file(self.invalid_file))
        )
        frames = [] if self.valid_file is None else list(read_key_file(self.valid_file))
        valid = pl.concat(frames, how="vertical") if frames else pl.DataFrame(schema=VALID_SCHEMA)
        return Bucket(self.number, invalid, with_content_keys(sort_readings(valid)))


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
    buckets: tuple[Bucket | BucketFiles, ...]
    #: ``WEIGHTSTREAM_FAULT`` / ``WEIGHTSTREAM_CHAOS(_SEED)`` of the driver (crash tests).
    fault_env: Mapping[str, str] = field(default_factory=dict)
    #: The results file's cells exactly as stored (``--raw``).
    raw: bool = False
    #: A directory of this machine where the worker writes its results-file lines, a file a
    #: chunk of a bucket, instead of returning them (None: returned in the report).
    lines_dir: str | None = None

    @property
    def rows(self) -> int:
        return sum(len(b) for b in self.buckets)

    def loaded(self) -> Partition:
        """This partition with its buckets' rows in it (to ship to a machine that cannot
        read this one's disk)."""
        return replace(self, buckets=tuple(b.load() for b in self.buckets))


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
    #: With :attr:`Partition.lines_dir`: the files those lines were written to instead, one
    #: per chunk of a bucket (spill files, :func:`~weightstream.ingest.spill.read_key_file`).
    line_files: list[str] = field(default_factory=list)
    #: Those rows counted (verdicts, reasons, resets, users), with ``lines``.
    counted: RunSummary | None = None

    def line_frames(self) -> Iterator[pl.DataFrame]:
        """The lines, one frame at a time (from the report, or from its files)."""
        if self.lines is not None:
            yield self.lines
        for path in self.line_files:
            yield from read_key_file(path)


def split_to_files(blocks: Iterable[Block], spill: Spill) -> list[BucketFiles]:
    """A file's rows, read block by block, by bucket into ``spill`` (which writes every frame
    to disk): this process holds a few blocks, never the file. Each bucket's invalid rows
    stay in line order; its readings are in file order, and sorted by whoever loads them
    (:meth:`BucketFiles.load`), so the sort runs on the workers, side by side. Non-empty
    buckets only."""
    if spill.memory_rows:
        raise ValueError("split_to_files needs a spill that writes every frame to disk")
    valid_frames: list[pl.DataFrame] = []
    invalid: list[tuple[int, RowProblem]] = []
    held = 0

    def flush() -> None:
        by_line: dict[int, list[tuple[int, RowProblem]]] = {}
        for line, problem in invalid:
            by_line.setdefault(line % BUCKETS, []).append((line, problem))
        for number, problems in by_line.items():
            spill.add(BUCKETS + number, invalid_frame(problems))
        if valid_frames:
            _split_valid(pl.concat(valid_frames, how="vertical", rechunk=False), spill)

    for block in blocks:
        invalid += block.invalid
        if block.valid.height:
            valid_frames.append(block.valid)
            held += block.valid.height
        # A few blocks split at once: a spill's cost is mostly per frame written.
        if held >= _SPLIT_ROWS:
            flush()
            valid_frames, invalid, held = [], [], 0
    flush()
    out = []
    for number in range(BUCKETS):
        rows = spill.rows(number) + spill.rows(BUCKETS + number)
        if rows:
            invalid_file, valid_file = spill.key_file(BUCKETS + number), spill.key_file(number)
            out.append(
                BucketFiles(
                    number,
                    rows,
                    None if invalid_file is None else str(invalid_file),
                    None if valid_file is None else str(valid_file),
                )
            )
    return out


def _split_valid(valid: pl.DataFrame, spill: Spill) -> None:
    """Readings (in file order) to their buckets' keys of ``spill``, in file order."""
    users = valid.get_column("user").unique().to_list()
    by_user = pl.DataFrame(
        {"user": users, "_bucket": [bucket_of(u) for u in users]},
        schema={"user": valid.schema["user"], "_bucket": pl.Int64},
    )
    keyed = valid.join(by_user, on="user", how="left", maintain_order="left")
    parts = keyed.partition_by("_bucket", as_dict=True, maintain_order=True, include_key=False)
    for key, part in parts.items():
        spill.add(int(key[0]), part)


def partitions_of(
    buckets: Sequence[Bucket | BucketFiles], count: int
) -> list[list[Bucket | BucketFiles]]:
    """``count`` partitions of about equal rows (largest bucket first to the lightest)."""
    count = max(1, min(count, len(buckets)))
    loads = [0] * count
    groups: list[list[Bucket | BucketFiles]] = [[] for _ in range(count)]
    for bucket in sorted(buckets, key=lambda b: (-len(b), b.number)):
        k = loads.index(min(loads))
        groups[k].append(bucket)
        loads[k] += len(bucket)
    return [sorted(g, key=lambda b: b.number) for g in groups if g]


def run_partition(partition: Partition) -> PartitionReport:
    """Run a partition's buckets through the batch engine (on a worker). Resumable.

    The worker's garbage collector is tuned while it runs (:mod:`weightstream.heap`).
    """
    with long_lived_heap(partition.config.processing.gc_young):
        return _run_partition(partition)


def _run_partition(partition: Partition) -> PartitionReport:
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
        chunk_rows = group * max(1, _CHUNK_ROWS // group)
        # Every chunk decided here in this run: its lines and counts go to the driver (kept
        # in the report, or in files of lines_dir: a spill of no memory, left for the driver
        # to read, removed with the run's scratch).
        complete = True
        counted = RunSummary(input_id=partition.input_id)
        kept: list[pl.DataFrame] = []
        files = None if partition.lines_dir is None else Spill(0, Path(partition.lines_dir))
        for given in partition.buckets:
            loading = time.perf_counter()
            bucket = given.load()  # one bucket's rows at a time (sorted, if read from disk)
            timings = summary.timings
            timings["sort"] = timings.get("sort", 0.0) + time.perf_counter() - loading
            key = bucket_position_id(partition.input_id, bucket.number)
            position = store.position(key)
            report.resumed_from += position
            # A chunk of the bucket at a time has a results table: what the worker holds
            # beside the bucket's rows does not grow with the bucket.
            for first, chunk in _chunks(bucket, chunk_rows):
                last = first + len(chunk)
                while position < last:
                    end = min(position + group, last)
                    span = (position - first, end - first)
                    try:
                        _commit_group(
                            processor, engine, partition.input_id, chunk, span, summary,
                            faults, SYSTEM_CLOCK, position_id=key, base=first,
                        )  # fmt: skip
                    except ConflictError:
                        # Another run of this partition committed the group first: go on
                        # from where the store says it is (never past a group it did not
                        # commit).
                        processor.forget()
                        stored = store.position(key)
                        if stored <= position:
                            raise
                        position = stored
                        continue
                    report.processed_now += end - position
                    position = end
                    faults.crash_point("pipeline.group_committed")
                # A chunk this run did not decide whole (the bucket resumed): the results
                # file then comes from the store.
                complete = complete and chunk.table.complete
                if not complete:
                    continue
                # The results file's lines and counts are made here, on the workers, in
                # parallel; the driver only merges them.
                frame = chunk.table.frame()
                del chunk
                counted.count_results(frame)
                lines = results_lines(frame, partition.raw)
                if files is None:
                    kept.append(lines)
                    continue
                number = len(report.line_files)
                files.add(number, lines)
                path = files.key_file(number)
                assert path is not None  # a spill of no memory writes every frame to disk
                report.line_files.append(str(path))
            processor.forget()
            del bucket
        report.retries = summary.retries
        report.timings = dict(summary.timings)
        if complete:
            counted.users_counted()  # a bucket's users are its own: a count will do
            report.counted = counted
            report.lines = pl.concat(kept, how="vertical") if kept else None
        else:
            report.line_files = []
        return report
    finally:
        store.close()


def _chunks(bucket: Bucket, rows: int) -> Iterator[tuple[int, Loaded]]:
    """The bucket's processing order (invalid rows, then readings) in consecutive chunks of
    ``rows`` rows, each with its first position in the bucket."""
    total = len(bucket)
    for first in range(0, total, rows):
        invalid, a, b = cut(bucket.invalid, first, min(first + rows, total))
        yield first, Loaded(invalid, bucket.valid.slice(a, b - a))


def _open_store(partition: Partition, faults: FaultPoints) -> StateStore:
    """The worker's own connection to the run's store."""
    from weightstream.store import open_store
    from weightstream.store.gate import WriteGate

    config, target = partition.config.store, partition.target
    if target.backend != "sqlite":
        return open_store(config, "", dsn=target.dsn, faults=faults)
    gate = None if target.gate is None else WriteGate(target.gate)
    return open_store(config, target.dsn, faults=faults, gate=gate)


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


def _dispatch(
    client: Any, partitions: list[Partition], sink: Sink
) -> tuple[list[PartitionReport], int]:
    """Run every partition; resubmit one whose worker (or data) was lost.

    A partition's buckets are read from the driver's disk (:class:`BucketFiles`) just before
    they are scattered, so the driver holds one partition's rows at a time. Returns the
    reports (by partition) and how many submissions were repeated.
    """
    as_completed = _distributed().as_completed
    attempts: dict[int, int] = {}
    pending: dict[Any, int] = {}

    def submit(k: int) -> Any:
        attempts[k] = attempts.get(k, 0) + 1
        # Right after a worker is lost the scheduler may still offer it for the data: a
        # failed scatter is tried again (the nanny restarts the worker; others take over).
        shipped = partitions[k].loaded()
        for wait in (0.1, 0.2, 0.5, 1.0, 2.0, 4.0, 8.0, 0.0):
            try:
                data = client.scatter(shipped, hash=False)
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
                report = future.result()
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
                continue
            sink(report)
            reports.append(report)
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
            yield Runner(lambda tasks, sink: _dispatch(cli, tasks, sink), count)

    with run_scratch() as scratch:
        return process_partitions(
            path,
            store,
            Target(dsn, "postgres"),
            config,
            on_dask,
            scratch=scratch,
            workers_read_scratch=False,
            partitions=partitions,
            out=out,
            raw=raw,
            column_map=column_map,
            clock=clock,
            fault_env=fault_env,
        )


#: The name of a run's scratch directory, before the driver's process id.
_RUN_PREFIX = "weightstream-run-"


@contextmanager
def run_scratch() -> Iterator[Path]:
    """A bucket run's scratch directory in ``$TMPDIR`` (its bucket files, its results lines,
    its write gate), removed after the run. Named after the driver's process id, so that a
    run removes what a killed one left (it can hold about 3 times the file)."""
    parent = Path(tempfile.gettempdir())
    remove_stale(parent, _RUN_PREFIX)
    with tempfile.TemporaryDirectory(prefix=f"{_RUN_PREFIX}{os.getpid()}-") as made:
        yield Path(made)


#: What the driver does with each partition's report as it arrives (while others run).
Sink = Callable[[PartitionReport], None]


@dataclass(frozen=True)
class Runner:
    """How partitions run: ``dispatch`` runs them all, handing each report to the sink as
    it arrives, and returns the reports by partition and how many were submitted again; on
    ``workers`` workers."""

    dispatch: Callable[[list[Partition], Sink], tuple[list[PartitionReport], int]]
    workers: int


def process_partitions(
    path: str | Path,
    store: StateStore,
    target: Target,
    config: Config,
    runner: Callable[[], AbstractContextManager[Runner]],
    *,
    scratch: Path,
    workers_read_scratch: bool,
    partitions: int | None = None,
    out: str | Path | None = None,
    raw: bool = False,
    column_map: Mapping[str, str] | None = None,
    clock: Clock = SYSTEM_CLOCK,
    fault_env: Mapping[str, str] | None = None,
) -> RunSummary:
    """Process ``path`` in bucket partitions run by ``runner`` (entered only when there is
    work, before the file is read, so workers start while it is). Resumable.

    The shared part of :func:`process_distributed` and
    :func:`weightstream.parallel.process_parallel`. No process holds the file: the driver
    splits it block by block into bucket files in ``scratch`` (a directory of its own
    machine), and merges the workers' results lines by range of rows as their reports
    arrive. ``workers_read_scratch``: the workers can read ``scratch`` (a local engine's):
    each reads its buckets there and writes its lines there. Otherwise (a cluster) the driver
    reads a partition's buckets just before shipping it, and the lines come back in the
    reports.
    """
    started = time.perf_counter()
    path = Path(path)
    input_id = file_digest(path)
    done = store.position(input_id)
    summary = RunSummary(input_id=input_id)
    parquet = out is not None and str(out).endswith(".parquet")
    with ExitStack() as held:
        lines = held.enter_context(ResultsSpill(config.processing.in_memory_rows, raw=raw))
        decided: list[PartitionReport] | None = None
        if done:
            blocks = read_blocks(path, config, now=clock.now(), column_map=column_map)
            total = sum(len(b.invalid) + b.valid.height for b in blocks)
            if done < total:
                # A single-process run stopped part-way: it resumes by the input's own position.
                return process_file(path, store, config, out=out, column_map=column_map, raw=raw)
            summary.resumed_from = done
        else:

            def take(report: PartitionReport) -> None:
                # Merged now, while other partitions run; dropped if a bucket had resumed
                # (the file then comes from the store).
                if report.counted is not None and not parquet:
                    for frame in report.line_frames():
                        lines.add_lines(frame)
                report.lines = None

            with runner() as run:
                buckets, total = _split_on_disk(
                    path, config, column_map, clock, summary.timings, scratch, held
                )
                lines_dir = str(scratch) if workers_read_scratch else None
                n = partitions or 4 * max(1, run.workers)
                tasks = [
                    Partition(
                        k,
                        input_id,
                        target,
                        config,
                        tuple(group),
                        fault_env=dict(fault_env or {}),
                        raw=raw,
                        lines_dir=lines_dir,
                    )
                    for k, group in enumerate(partitions_of(buckets, n))
                ]
                del buckets
                reports, resubmitted = run.dispatch(tasks, take) if tasks else ([], 0)
                del tasks
            summary.resumed_from = sum(r.resumed_from for r in reports)
            summary.processed_now = sum(r.processed_now for r in reports)
            # A partition resubmitted after its worker was lost counts as a retry, as a
            # redone commit group does.
            summary.retries = sum(r.retries for r in reports) + resubmitted
            for r in reports:
                for name, seconds in r.timings.items():
                    summary.timings[name] = summary.timings.get(name, 0.0) + seconds
            if total:
                store.commit(UnitOfWork(position=(input_id, total)))
            decided = reports if all(r.counted is not None for r in reports) else None
        written = time.perf_counter()
        if not parquet and decided is not None:
            # Every row decided in this run: the results file from the lines the workers made
            # of their engine's own tables, as one process writes it (the same bytes the store
            # gives, tests/engine), in row order.
            for r in decided:
                assert r.counted is not None
                summary.add_counts(r.counted)
            if out is not None:
                write_atomic(Path(out), lines.write)
        elif parquet and out is not None:
            write_parquet(store, input_id, Path(out), summary=summary)
        else:  # counted, and written when asked, from the store
            write_results(
                store, input_id, None if out is None else Path(out), summary=summary, raw=raw
            )
    summary.timings["results"] = time.perf_counter() - written
    summary.seconds = time.perf_counter() - started
    return summary


def _split_on_disk(
    path: Path,
    config: Config,
    column_map: Mapping[str, str] | None,
    clock: Clock,
    timings: dict[str, float],
    scratch: Path,
    held: ExitStack,
) -> tuple[list[BucketFiles], int]:
    """The file's buckets as files in ``scratch`` (kept until ``held`` closes) and its rows."""
    started = time.perf_counter()
    spill = held.enter_context(Spill(0, scratch))
    blocks = read_blocks(path, config, now=clock.now(), column_map=column_map)
    buckets = split_to_files(blocks, spill)
    timings["parse"] = time.perf_counter() - started
    return buckets, sum(len(b) for b in buckets)


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
