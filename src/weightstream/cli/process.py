"""``weightstream process``: one export through the pipeline, with its summary.

Output paths and the metrics port are checked before any work (a bad one is ``USAGE``); a
bad header or a results file fed back in fails before any database exists.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.table import Table

from weightstream._display import text
from weightstream.cli._common import (
    ConfigOpt,
    DbOpt,
    console,
    err,
    fail,
    guard,
    load,
    open_store,
    wiring,
)
from weightstream.errors import ExitCode, exit_code_for

__all__ = ["register"]

T = TypeVar("T")


def process(
    ctx: typer.Context,
    input: Annotated[Path, typer.Argument(help="CSV export to process.")],
    db: DbOpt = Path("weightstream.db"),
    out: Annotated[Path | None, typer.Option("--out", help="Results CSV to write.")] = None,
    config: ConfigOpt = None,
    column: Annotated[
        list[str] | None,
        typer.Option(
            "--column",
            help="Map a column explicitly: canonical=header "
            "(canonical: user_id, timestamp, weight, unit, source, id).",
        ),
    ] = None,
    metrics_file: Annotated[
        Path | None, typer.Option("--metrics-file", help="Write Prometheus text here after.")
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option("--metrics-port", help="Serve /metrics during the run.")
    ] = None,
    json_summary: Annotated[
        bool, typer.Option("--json", help="Print the summary as JSON.")
    ] = False,
    log_json: Annotated[bool, typer.Option("--log-json", help="JSON log lines.")] = False,
    raw: Annotated[
        bool,
        typer.Option(
            "--raw",
            help="Write results cells exactly as stored, for programs (by default a text "
            "cell starting with = + - @ tab or CR gets a leading ' so spreadsheets show it "
            "as text).",
        ),
    ] = False,
    engine: Annotated[
        str,
        typer.Option(
            "--engine",
            help="single: this process. processes: users shuffled over worker processes of "
            "this machine (--workers; SQLite or PostgreSQL). dask: users shuffled over a Dask "
            "cluster's workers (needs --db postgresql://...; --out DIR.parquet writes a "
            "Parquet dataset).",
        ),
    ] = "single",
    scheduler: Annotated[
        str,
        typer.Option(
            "--scheduler",
            help="With --engine dask: a scheduler address (tcp://host:8786), or local for a "
            "cluster of worker processes on this machine.",
        ),
    ] = "local",
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            help="With --engine processes, or dask with --scheduler local: worker processes "
            "(default: CPUs).",
        ),
    ] = None,
    partitions: Annotated[
        int | None,
        typer.Option(
            "--partitions",
            help="With --engine processes or dask: tasks (default: 4 per worker).",
        ),
    ] = None,
) -> None:
    """Process an export: one result per input row; resumable; nothing counted twice.

    Example: weightstream process export.csv --db weightstream.db --out results.csv
    """
    from weightstream.logs import LogObserver, configure_logging
    from weightstream.metrics import MetricsObserver
    from weightstream.observe import Observers
    from weightstream.pipeline import RESULT_FIELDS, process_file, write_results
    from weightstream.results_file import output_error

    configure_logging(json=log_json, level="WARNING")
    cfg = load(config)
    mapping: dict[str, str] = {}
    for item in column or []:
        name, sep, header = item.partition("=")
        if not sep:
            fail(f"--column takes canonical=header, got {item!r}", ExitCode.USAGE)
        mapping[name.strip()] = header.strip()
    if not input.is_file():
        fail(f"no such input file: {input}", ExitCode.NO_INPUT)
    if metrics_port is not None and not 1 <= metrics_port <= 65535:
        fail(f"--metrics-port takes a port from 1 to 65535, got {metrics_port}", ExitCode.USAGE)
    _check_outputs(input, db, config, [("--out", out), ("--metrics-file", metrics_file)])
    dask_dsn = _dask_target(ctx, engine, db, cfg, workers, partitions)
    from weightstream.ingest import open_csv

    # A bad header fails before any database exists; so does a results file fed back in.
    source = guard(lambda: open_csv(input, mapping or None))
    if not mapping and tuple(h.lower() for h in source.header) == RESULT_FIELDS:
        fail(
            f"{input} is a weightstream results file, not an export: processing it would "
            "count its readings again (if it really is an export, map its columns with "
            "--column)",
            ExitCode.BAD_INPUT,
        )
    metrics = MetricsObserver(known_sources=cfg.sources.multipliers)
    observer = Observers([metrics, LogObserver()])
    server = None if metrics_port is None else _serve_metrics(metrics, metrics_port)
    try:
        store = open_store(ctx, db, cfg, create=True, observer=observer)
        try:
            if engine == "processes":
                summary = guard(
                    lambda: _run_parallel(
                        input, store, ctx, db, cfg, out, raw, mapping, workers, partitions
                    )
                )
                raw = False  # the file is already written as asked
            elif dask_dsn is not None:
                summary = guard(
                    lambda: _run_distributed(
                        input, store, dask_dsn, cfg, out, raw, mapping, scheduler, workers,
                        partitions,
                    )
                )  # fmt: skip
                raw = False  # the file is already written as asked
            else:
                summary = guard(
                    lambda: _run_with_progress(
                        lambda progress: process_file(
                            input,
                            store,
                            cfg,
                            out=None if raw else out,
                            column_map=mapping or None,
                            observer=observer,
                            progress=progress,
                            faults=wiring(ctx).faults,
                        )
                    )
                )
            if raw and out is not None:
                guard(lambda: write_results(store, summary.input_id, out, raw=True))
        finally:
            store.close()
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
    if metrics_file is not None:
        try:
            metrics.write_textfile(metrics_file)
        except OSError as exc:
            error = output_error(metrics_file, exc, "metrics file")
            fail(error, exit_code_for(error))
    if json_summary:
        console.print_json(json.dumps(summary.as_dict()), ensure_ascii=True)
    else:
        _print_summary(summary.as_dict())


def _dask_target(
    ctx: typer.Context,
    engine: str,
    db: Path,
    cfg: Any,
    workers: int | None,
    partitions: int | None,
) -> str | None:
    """The PostgreSQL URL of a ``--engine dask`` run (None for the other engines); bad usage
    exits."""
    from weightstream.cli._common import database_url

    if engine not in ("single", "processes", "dask"):
        fail(f"--engine takes single, processes or dask, got {engine!r}", ExitCode.USAGE)
    if engine == "single":
        return None
    for option, value in (("--workers", workers), ("--partitions", partitions)):
        if value is not None and value < 1:
            fail(f"{option} takes a number of at least 1, got {value}", ExitCode.USAGE)
    if engine == "processes":
        return None
    dsn = database_url(ctx, db, cfg)
    if dsn is None:
        fail(
            "--engine dask needs a database every worker reaches: --db postgresql://... "
            "(or store.dsn in the configuration)",
            ExitCode.USAGE,
        )
    return dsn


def _fault_env() -> dict[str, str]:
    """Crash points and chaos as this process was given them, for worker processes."""
    import os

    names = ("WEIGHTSTREAM_FAULT", "WEIGHTSTREAM_CHAOS", "WEIGHTSTREAM_CHAOS_SEED")
    return {k: v for k, v in os.environ.items() if k in names}


def _run_parallel(
    input: Path,
    store: Any,
    ctx: typer.Context,
    db: Path,
    cfg: Any,
    out: Path | None,
    raw: bool,
    mapping: dict[str, str],
    workers: int | None,
    partitions: int | None,
) -> Any:
    """``process --engine processes``: worker processes of this machine, one store."""
    from weightstream.cli._common import database_url
    from weightstream.parallel import process_parallel

    return process_parallel(
        input,
        store,
        cfg,
        dsn=database_url(ctx, db, cfg),
        workers=workers,
        partitions=partitions,
        out=out,
        raw=raw,
        column_map=mapping or None,
        fault_env=_fault_env(),
    )


def _run_distributed(
    input: Path,
    store: Any,
    dsn: str,
    cfg: Any,
    out: Path | None,
    raw: bool,
    mapping: dict[str, str],
    scheduler: str,
    workers: int | None,
    partitions: int | None,
) -> Any:
    """``process --engine dask``: the run on the cluster, the results written from the store."""
    from weightstream.distributed import process_distributed

    # Crash points and chaos reach the workers as the driver was given them.
    fault_env = _fault_env()
    return process_distributed(
        input,
        store,
        dsn,
        cfg,
        scheduler=scheduler,
        workers=workers,
        partitions=partitions,
        out=out,
        raw=raw,
        column_map=mapping or None,
        fault_env=fault_env,
    )


def _check_outputs(
    input: Path, db: Path, config: Path | None, outputs: list[tuple[str, Path | None]]
) -> None:
    """Refuse (exit ``USAGE``) an output path that would destroy something, before any work.

    See :func:`weightstream.results_file.output_path_problem`: never the input, the database
    or its side files, the configuration, another output, a device, directory or fifo; only
    in an existing directory where a file can be created.
    """
    from weightstream.results_file import output_path_problem, protected_paths

    keep = protected_paths(input, db)
    if config is not None:
        keep["the configuration file"] = [config]
    for option, path in outputs:
        if path is None:
            continue
        problem = output_path_problem(path, keep=keep, option=option)
        if problem is not None:
            fail(problem, ExitCode.USAGE)
        keep[f"the file given to {option}"] = [path]


def _serve_metrics(metrics: Any, port: int) -> Any:
    """Start the /metrics server before any work; a port that cannot be bound is ``USAGE``."""
    try:
        return metrics.serve(port)
    except OSError as exc:
        fail(f"--metrics-port {port}: cannot listen: {exc.strerror or exc}", ExitCode.USAGE)


def _run_with_progress(run: Callable[[Any], T]) -> T:
    """``run(progress)``: a transient progress bar on stderr when stdout is a terminal."""
    if not sys.stdout.isatty():
        return run(None)
    from rich.progress import Progress

    with Progress(console=err, transient=True) as bar:
        task = bar.add_task("processing", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        return run(progress)


def _print_summary(s: dict[str, Any]) -> None:
    table = Table(title="weightstream summary", show_header=False)
    for key in (
        "rows",
        "processed_now",
        "resumed_from",
        "accepted",
        "rejected",
        "invalid",
        "duplicate",
        "late",
        "users",
        "seconds",
    ):
        table.add_row(key, str(s[key]))
    for group in ("rejected_by_reason", "invalid_by_reason", "resets_by_type", "reset_outcomes"):
        for name, count in sorted(s[group].items()):
            table.add_row(text(f"{group.replace('_by_', ' by ')}: {name}"), str(count))
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add ``process`` to ``app``."""
    app.command()(process)
