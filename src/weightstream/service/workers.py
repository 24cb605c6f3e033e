"""``weightstream serve --workers N``: N worker processes behind one listening socket.

One process serves single-reading requests on one core: its event loop reads each request,
decides and commits it and writes the answer, and at about 2,000 requests a second that core is
saturated while the machine's others idle. Workers put more cores to work. uvicorn's own
supervisor (:class:`uvicorn.supervisors.Multiprocess`) binds the socket once, spawns the
workers (each accepts connections from the shared socket), pings them and replaces one that
dies, and on SIGTERM passes the signal on and waits for every worker's graceful shutdown: a
worker answers what it has acknowledged before it exits, as a single process does.

Each worker builds its own app (:func:`worker_app`, given to uvicorn as an import string: the
workers are spawned, not forked, so numba, polars and SQLite start clean in each) with its own
store connection, key table and group committer, from the :class:`WorkerSpec` the parent leaves
in the environment. The workers share nothing but the store, as several machines on one
PostgreSQL database do (``ServiceSettings.shared_store``): before deciding, a group asks the
store for its users' state versions and reloads the states another worker moved, and the
versions (plus SQLite's one writer at a time) turn two
workers' overlapping commits for one user into a conflict that the second redoes from the
first's state. A user's readings are still decided one after the other.

Metrics: the parent makes a fresh directory for prometheus_client's multiprocess mode
(:data:`weightstream.metrics.MULTIPROCESS_ENV`) before any worker starts, so ``/metrics`` on any
worker answers for all of them; a worker that dies is marked dead (its gauges leave, its counts
stay), and the directory is removed when the service stops.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvicorn
from prometheus_client import multiprocess
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors.multiprocess import Multiprocess

from weightstream.faults import FaultPoints
from weightstream.metrics import MULTIPROCESS_ENV

if TYPE_CHECKING:
    from fastapi import FastAPI


__all__ = ["WorkerSpec", "worker_app", "run_workers", "SPEC_ENV"]

#: The environment variable that carries the :class:`WorkerSpec` to the workers.
SPEC_ENV = "WEIGHTSTREAM_SERVE_WORKER"

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs to build the app that a single ``serve`` process would build.

    ``db``: the SQLite file (and the key table's); ``dsn``: a PostgreSQL URL when the store is
    one; ``config``: the configuration file, if any (the environment is inherited);
    ``settings``: :class:`~weightstream.service.ServiceSettings` fields.
    """

    db: str
    dsn: str | None = None
    config: str | None = None
    log_json: bool = False
    settings: dict[str, Any] = field(default_factory=dict)

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> WorkerSpec:
        text = os.environ.get(SPEC_ENV)
        if not text:
            raise RuntimeError(f"{SPEC_ENV} is not set: workers are started by serve --workers")
        return cls(**json.loads(text))


def worker_app() -> FastAPI:
    """The app of one worker (uvicorn's factory, called in the worker process).

    A worker that cannot build its app (the store or the configuration unusable) exits with
    uvicorn's startup-failure status, which stops the supervisor instead of having it spawn
    the same failure again and again.
    """
    from weightstream.logs import configure_logging

    spec = WorkerSpec.from_env()
    configure_logging(json=spec.log_json, level="INFO")
    try:
        return _build(spec)
    except Exception as exc:  # noqa: BLE001 - any failure to build is a failed start
        _log.error("serve: a worker could not start: %s: %s", type(exc).__name__, exc)
        sys.exit(STARTUP_FAILURE)


def _build(spec: WorkerSpec) -> FastAPI:
    from weightstream.config import load_config
    from weightstream.metrics import MetricsObserver
    from weightstream.service.app import create_app
    from weightstream.service.keys import KeyStore
    from weightstream.service.settings import ServiceSettings
    from weightstream.store import open_store

    cfg = load_config(spec.config)
    faults = FaultPoints.from_environ(os.environ)  # as the serve command reads them
    metrics = MetricsObserver(known_sources=cfg.sources.multipliers)
    # The parent created and migrated the database before the workers started.
    store = open_store(
        cfg.store, spec.db, dsn=spec.dsn, create=False, observer=metrics, faults=faults
    )
    try:
        keys = KeyStore(Path(spec.db), busy_timeout_ms=cfg.store.busy_timeout_ms)
    except BaseException:
        store.close()
        raise

    def close_all() -> None:
        keys.close()
        store.close()

    settings = ServiceSettings(**{**spec.settings, "shared_store": True})
    return create_app(
        store,
        cfg,
        keys=keys,
        settings=settings,
        metrics=metrics,
        faults=faults,
        on_close=close_all,
    )


def run_workers(spec: WorkerSpec, workers: int, **uvicorn_options: Any) -> int | None:
    """Serve with ``workers`` processes until a signal stops them; return that signal.

    ``uvicorn_options``: :class:`uvicorn.Config`'s (host, port, timeouts, protocol classes).
    Raises ``SystemExit`` (uvicorn's) when the socket cannot be bound.
    """
    directory = tempfile.mkdtemp(prefix="weightstream-metrics-")
    saved = {name: os.environ.get(name) for name in (MULTIPROCESS_ENV, SPEC_ENV)}
    os.environ[MULTIPROCESS_ENV] = directory
    os.environ[SPEC_ENV] = spec.to_env()
    try:
        config = uvicorn.Config(
            f"{__name__}:worker_app", factory=True, workers=workers, **uvicorn_options
        )
        sock = config.bind_socket()
        try:
            supervisor = _Supervisor(config, sockets=[sock])
            supervisor.run()
        finally:
            sock.close()
        return supervisor.stopped_by
    finally:
        shutil.rmtree(directory, ignore_errors=True)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class _Supervisor(Multiprocess):
    """uvicorn's supervisor, which also remembers the signal that stopped it and marks the
    metrics of a worker it replaced as dead."""

    stopped_by: int | None = None

    def handle_int(self) -> None:
        self.stopped_by = signal.SIGINT
        super().handle_int()

    def handle_term(self) -> None:
        self.stopped_by = signal.SIGTERM
        super().handle_term()

    def keep_subprocess_alive(self) -> None:
        before = {p.pid for p in self.processes}
        super().keep_subprocess_alive()
        for pid in before - {p.pid for p in self.processes}:
            if pid is not None:
                _log.warning("serve: worker %s died and was replaced", pid)
                multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
