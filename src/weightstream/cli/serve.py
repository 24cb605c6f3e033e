"""``weightstream serve``: the HTTP and FHIR service on uvicorn.

Binds to loopback unless told otherwise. The store, the key table and the metrics are opened
here and handed to :func:`weightstream.service.create_app`. On SIGTERM or SIGINT uvicorn stops
accepting connections and waits for the requests in flight (up to ``--graceful-timeout``);
the app then decides, commits and answers every reading already submitted before the store is
closed, so an acknowledged reading is never lost and no reading is acknowledged unless stored.
uvicorn then ends the process by the signal it got (exit status -15 for SIGTERM), as a
process that was asked to stop should.
"""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from weightstream.cli._common import (
    ConfigOpt,
    DbOpt,
    database_url,
    err,
    fail,
    guard,
    load,
    open_store,
    wiring,
)
from weightstream.errors import ExitCode

if TYPE_CHECKING:
    from weightstream.config import Config
    from weightstream.service import ServiceSettings

__all__ = ["register", "serve"]


def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option("--host", help="Address to bind (loopback by default).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = 8000,
    db: DbOpt = Path("weightstream.db"),
    config: ConfigOpt = None,
    max_batch: Annotated[
        int, typer.Option("--max-batch", help="Most readings in one request.")
    ] = 10_000,
    max_body_mb: Annotated[
        float, typer.Option("--max-body-mb", help="Largest request body (MiB); 413 above.")
    ] = 8.0,
    graceful_timeout: Annotated[
        int,
        typer.Option("--graceful-timeout", help="Seconds to let requests finish on SIGTERM."),
    ] = 30,
    access_log: Annotated[
        bool, typer.Option("--access-log/--no-access-log", help="One log line per request.")
    ] = False,
    log_json: Annotated[bool, typer.Option("--log-json", help="JSON log lines.")] = False,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            help="Worker processes sharing the port and the store (one core each; see "
            "weightstream.service.workers).",
        ),
    ] = 1,
) -> None:
    """Serve readings over HTTP (/v1) and FHIR R4 (/fhir), with API keys.

    Example: weightstream keys create --db weightstream.db --scope read --scope write
             weightstream serve --db weightstream.db --port 8000
    """
    import uvicorn

    from weightstream.logs import configure_logging
    from weightstream.metrics import MetricsObserver
    from weightstream.service import KeyStore, ServiceSettings, create_app
    from weightstream.service.transport import CoalescingHttpTools

    if not 1 <= port <= 65535:
        fail(f"--port takes a port from 1 to 65535, got {port}", ExitCode.USAGE)
    if not 1 <= workers <= 64:
        fail(f"--workers takes 1 to 64 processes, got {workers}", ExitCode.USAGE)
    try:
        settings = ServiceSettings(
            max_batch=max_batch,
            max_body_bytes=int(max_body_mb * 1024 * 1024),
            group_max_readings=max(max_batch, ServiceSettings().group_max_readings),
        )
    except ValueError as exc:
        fail(exc, ExitCode.USAGE)
    configure_logging(json=log_json, level="INFO")
    cfg = load(config)
    metrics = MetricsObserver(known_sources=cfg.sources.multipliers)
    store = open_store(ctx, db, cfg, create=True, observer=metrics)
    try:
        keys = guard(lambda: KeyStore(db, busy_timeout_ms=cfg.store.busy_timeout_ms))
        try:

            def close_all() -> None:
                keys.close()
                store.close()

            if not any(k.active for k in keys.list()):
                err.print(
                    f"warning: no active API key in {db}; every /v1 and /fhir request will get "
                    f"401 (create one with: weightstream keys create --db {db} --scope write)",
                    highlight=False,
                    markup=False,
                )
            options: dict[str, Any] = {
                "host": host,
                "port": port,
                "log_config": None,
                "access_log": access_log,
                "timeout_graceful_shutdown": graceful_timeout,
                "server_header": False,
                # Named, not "auto": auto falls back to h11 and asyncio without a word when
                # either is missing (h11 costs 2-3x httptools a request). The service binds
                # loopback and reads no X-Forwarded header.
                # httptools, writing each answer in one piece (service/transport.py).
                "http": CoalescingHttpTools,
                "loop": "asyncio" if sys.platform == "win32" else "uvloop",
                "proxy_headers": False,
            }
            if workers > 1:
                keys.close()
                store.close()
                _serve_workers(ctx, db, config, cfg, settings, log_json, workers, options)
                return
            app = create_app(
                store,
                cfg,
                keys=keys,
                settings=settings,
                metrics=metrics,
                faults=wiring(ctx).faults,
                on_close=close_all,
            )
            server = uvicorn.Server(uvicorn.Config(app, **options))
            try:
                server.run()
            except SystemExit:
                fail(f"cannot serve on {host}:{port} (see the log line above)", ExitCode.USAGE)
            if not server.started:
                fail(f"cannot serve on {host}:{port} (see the log line above)", ExitCode.USAGE)
        finally:
            keys.close()
    finally:
        store.close()


def _serve_workers(
    ctx: typer.Context,
    db: Path,
    config_path: Path | None,
    cfg: Config,
    settings: ServiceSettings,
    log_json: bool,
    workers: int,
    options: dict[str, Any],
) -> None:
    """Serve with ``workers`` processes (:mod:`weightstream.service.workers`); the store was
    created and migrated by this process, and is closed. Ends by the signal that stopped it,
    as the single process does."""
    from weightstream.service.workers import WorkerSpec, run_workers

    if wiring(ctx).store_class is not None:
        fail("--workers cannot run with a test store class", ExitCode.USAGE)
    spec = WorkerSpec(
        db=str(db),
        dsn=database_url(ctx, db, cfg),
        config=None if config_path is None else str(config_path),
        log_json=log_json,
        settings=asdict(settings),
    )
    try:
        stopped_by = run_workers(spec, workers, **options)
    except SystemExit:
        fail(
            f"cannot serve on {options['host']}:{options['port']} (see the log line above)",
            ExitCode.USAGE,
        )
    if stopped_by is None:  # uvicorn's supervisor stopped by itself: a worker could not start
        fail("the workers could not start (see the log lines above)", ExitCode.INTERNAL)
    signal.signal(stopped_by, signal.SIG_DFL)
    os.kill(os.getpid(), stopped_by)


def register(app: typer.Typer) -> None:
    """Add ``serve`` to ``app``."""
    app.command("serve")(serve)
