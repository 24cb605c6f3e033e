"""Fixtures of the service tests: a database with keys, the app in-process, a live server.

* ``svc``: the app over a fresh SQLite database, run in-process (lifespan included) through
  Starlette's test client, with a ``write`` key (read and write), a ``read`` key (read only)
  and helpers to post and to read the store back;
* ``live_server``: ``weightstream serve`` in a child process on a free loopback port (the real
  command: uvicorn, signals, the store opened by the CLI).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from weightstream.config import Config
from weightstream.service import KeyStore, Scope, ServiceSettings, create_app, open_keys
from weightstream.store.sqlite import SQLiteStore

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

#: Runs the weightstream command line with ``serve`` and ``keys`` registered (whether or not
#: the package's command list has them yet).
LAUNCH = (
    "import sys, weightstream.cli as c\n"
    "from weightstream.cli import serve, keys\n"
    "names = {i.name for i in c.app.registered_commands} | "
    "{g.name for g in c.app.registered_groups}\n"
    "if 'serve' not in names: serve.register(c.app)\n"
    "if 'keys' not in names: keys.register(c.app)\n"
    "c.main()\n"
)


def cli_command(*args: str | os.PathLike[str]) -> list[str]:
    return [sys.executable, "-c", LAUNCH, *map(str, args)]


@dataclass
class Svc:
    """The app in-process over ``db``, with its keys and a client."""

    db: Path
    store: SQLiteStore
    keys: KeyStore
    client: TestClient
    write_key: str
    read_key: str
    app: Any
    headers: dict[str, str] = field(default_factory=dict)

    def auth(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.write_key}"}

    def post(self, readings: Any, key: str | None = None) -> httpx.Response:
        body = readings if isinstance(readings, dict) else {"readings": readings}
        return self.client.post("/v1/measurements", json=body, headers=self.auth(key))

    def get(self, path: str, key: str | None = None, **params: Any) -> httpx.Response:
        return self.client.get(path, headers=self.auth(key or self.read_key), params=params)

    def table_counts(self) -> dict[str, int]:
        import sqlite3

        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        try:
            return {
                t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]
                for (t,) in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') ORDER BY name"
                )
            }
        finally:
            conn.close()


def make_svc(
    tmp_path: Path, settings: ServiceSettings | None = None, config: Config | None = None
) -> Iterator[Svc]:
    db = tmp_path / "service.db"
    keys = open_keys(db)
    write_key = keys.create([Scope.READ, Scope.WRITE], "tests").secret
    read_key = keys.create([Scope.READ], "reader").secret
    store = SQLiteStore(db)
    # The collector's tuning (a full collection of the whole test process at each app's
    # start) is tested apart (test_gc.py); the other tests' apps leave the collector alone.
    settings = settings or ServiceSettings(gc_young=0)
    app = create_app(store, config or Config(), keys=keys, settings=settings)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Svc(db, store, keys, client, write_key, read_key, app)
    store.close()
    keys.close()


@pytest.fixture
def svc(tmp_path: Path) -> Iterator[Svc]:
    """The app over a fresh database (see the module docstring)."""
    yield from make_svc(tmp_path)


@pytest.fixture
def svc_factory(tmp_path: Path) -> Iterator[Callable[..., Svc]]:
    """``svc_factory(settings=..., config=...)``: an app with other settings (one per test)."""
    running: list[Iterator[Svc]] = []

    def build(**kwargs: Any) -> Svc:
        gen = make_svc(tmp_path, **kwargs)
        running.append(gen)
        return next(gen)

    yield build
    for gen in running:
        for _ in gen:
            pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Live:
    """A ``weightstream serve`` child process."""

    proc: subprocess.Popen[str]
    url: str
    db: Path
    write_key: str
    read_key: str
    log: Path

    def auth(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.write_key}"}

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)

    def terminate(self) -> None:
        """SIGTERM if still running, and wait; SIGKILL one that has not ended in 30 s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


def start_server(tmp_path: Path, *extra: str) -> Live:
    db = tmp_path / "live.db"
    keys = open_keys(db)
    write_key = keys.create([Scope.READ, Scope.WRITE]).secret
    read_key = keys.create([Scope.READ]).secret
    keys.close()
    port = free_port()
    log = tmp_path / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEIGHTSTREAM_")}
    with log.open("w") as out:
        proc = subprocess.Popen(
            cli_command("serve", "--db", db, "--port", str(port), *extra),
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"server exited {proc.returncode}: {log.read_text()}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"server did not start: {log.read_text()}")
        time.sleep(0.1)
    return Live(proc, url, db, write_key, read_key, log)


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[Live]:
    """``weightstream serve`` on a free loopback port; stopped (SIGTERM) afterwards."""
    live = start_server(tmp_path)
    try:
        yield live
    finally:
        live.terminate()


#: What uvicorn logs once a worker's app has started.
STARTED = "Application startup complete."


@pytest.fixture
def live_workers(tmp_path: Path) -> Iterator[Live]:
    """``weightstream serve --workers 2``, once both workers have started; stopped (SIGTERM)
    afterwards."""
    live = start_server(tmp_path, "--workers", "2")
    try:
        deadline = time.monotonic() + 60
        while live.log_text().count(STARTED) < 2:
            assert live.proc.poll() is None, live.log_text()
            assert time.monotonic() < deadline, live.log_text()
            time.sleep(0.1)
        yield live
    finally:
        live.terminate()
