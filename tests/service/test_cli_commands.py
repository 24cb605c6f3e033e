"""``weightstream keys create|list|revoke`` and ``weightstream serve`` as commands."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import httpx
import pytest

from weightstream.service import open_keys


def run(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    from .conftest import cli_command  # type: ignore[import-not-found]

    env = {k: v for k, v in os.environ.items() if not k.startswith("WEIGHTSTREAM_")}
    env["COLUMNS"] = "200"
    return subprocess.run(
        cli_command(*args), capture_output=True, text=True, env=env, timeout=timeout, check=False
    )


def test_keys_create_list_revoke(tmp_path: Path) -> None:
    """create prints the key alone on stdout; list never shows it; revoke disables it."""
    db = tmp_path / "k.db"
    made = run(
        "keys", "create", "--db", db, "--scope", "read", "--scope", "write", "--label", "ops"
    )
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert key.startswith("ws_") and len(made.stdout.splitlines()) == 1
    keys = open_keys(db, create=False)
    assert keys.verify(key) is not None
    listed = run("keys", "list", "--db", db, "--json")
    assert listed.returncode == 0 and key.rsplit("_", 1)[1] not in listed.stdout
    assert '"label": "ops"' in listed.stdout and '"read"' in listed.stdout
    key_id = key.split("_")[1]
    assert run("keys", "revoke", key_id, "--db", db).returncode == 0
    keys.cache_s = 0
    assert keys.verify(key) is None
    assert run("keys", "revoke", key_id, "--db", db).returncode == 1
    keys.close()


def test_keys_bad_usage(tmp_path: Path) -> None:
    """An unknown scope is 64; a missing database for list is 74 and is not created."""
    db = tmp_path / "k.db"
    assert run("keys", "create", "--db", db, "--scope", "admin").returncode == 64
    missing = tmp_path / "missing.db"
    assert run("keys", "list", "--db", missing).returncode == 74
    assert not missing.exists()


def test_keys_refuse_a_foreign_database(tmp_path: Path) -> None:
    """A SQLite file of another application is refused and left as it was."""
    import sqlite3

    db = tmp_path / "foreign.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    before = db.read_bytes()
    res = run("keys", "create", "--db", db)
    assert res.returncode == 74
    assert db.read_bytes() == before


def test_serve_port_in_use_exits_64(tmp_path: Path) -> None:
    """A port that cannot be bound: one error, exit 64."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        res = run("serve", "--db", tmp_path / "s.db", "--port", str(port), timeout=120)
    assert res.returncode == 64, res.stderr
    assert "Traceback" not in res.stderr


def test_serve_rejects_a_bad_port(tmp_path: Path) -> None:
    """--port outside 1-65535 is a usage error before anything is opened."""
    res = run("serve", "--db", tmp_path / "s.db", "--port", "70000")
    assert res.returncode == 64
    assert not (tmp_path / "s.db").exists()


@pytest.mark.parametrize("workers", ["0", "65"])
def test_serve_rejects_a_bad_number_of_workers(tmp_path: Path, workers: str) -> None:
    """--workers outside 1-64 is a usage error before anything is opened."""
    res = run("serve", "--db", tmp_path / "s.db", "--workers", workers)
    assert res.returncode == 64, res.stderr
    assert "--workers" in res.stderr
    assert not (tmp_path / "s.db").exists()


def test_serve_with_workers_on_a_port_in_use_exits_64(tmp_path: Path) -> None:
    """--workers 2 on a port another socket holds: one error line, exit 64, no worker."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        res = run("serve", "--db", tmp_path / "s.db", "--port", str(port), "--workers", "2",
                  timeout=120)
    assert res.returncode == 64, res.stderr
    assert "cannot serve on" in res.stderr


def test_serve_binds_loopback_and_serves(live_server) -> None:
    """The real command answers on 127.0.0.1 with the keys of its database."""
    assert live_server.url.startswith("http://127.0.0.1:")
    r = httpx.get(
        live_server.url + "/v1/users/x/resets", headers=live_server.auth(live_server.read_key)
    )
    assert r.status_code == 200 and r.json() == []
    assert httpx.get(live_server.url + "/readyz").json()["status"] == "ready"


def test_serve_names_uvicorns_fast_parts(tmp_path: Path, monkeypatch) -> None:
    """serve asks uvicorn for httptools (its protocol, writing each answer in one piece) and
    uvloop by name (auto would fall back to h11 and asyncio without a word) and reads no proxy
    headers."""
    import sys

    import uvicorn
    from typer.testing import CliRunner
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from weightstream.cli import app
    from weightstream.service.transport import CoalescingHttpTools

    seen: list[uvicorn.Config] = []

    class Server:
        def __init__(self, config: uvicorn.Config) -> None:
            seen.append(config)
            self.started = True

        def run(self) -> None:
            pass

    monkeypatch.setattr(uvicorn, "Server", Server)
    result = CliRunner().invoke(app, ["serve", "--db", str(tmp_path / "s.db"), "--port", "8765"])
    assert result.exit_code == 0, result.output
    (config,) = seen
    assert config.http is CoalescingHttpTools and config.proxy_headers is False
    assert issubclass(CoalescingHttpTools, HttpToolsProtocol)
    assert config.loop == ("asyncio" if sys.platform == "win32" else "uvloop")


def test_serve_exits_70_when_its_workers_cannot_start(tmp_path: Path, monkeypatch) -> None:
    """When uvicorn's supervisor stops by itself (a worker failed to start, see
    test_workers.py), serve says so in one line and exits 70, after handing the workers the
    same options a single process would use."""
    from typer.testing import CliRunner

    from weightstream.cli import app
    from weightstream.service import workers

    seen: list[tuple[workers.WorkerSpec, int, dict[str, object]]] = []

    def supervisor_stopped_by_itself(spec, n, **options):  # type: ignore[no-untyped-def]
        seen.append((spec, n, options))
        return None

    monkeypatch.setattr(workers, "run_workers", supervisor_stopped_by_itself)
    db = tmp_path / "s.db"
    result = CliRunner().invoke(app, ["serve", "--db", str(db), "--workers", "3"])
    assert result.exit_code == 70, result.output
    assert "the workers could not start" in result.output
    ((spec, n, options),) = seen
    assert n == 3 and spec.db == str(db) and spec.dsn is None
    assert options["host"] == "127.0.0.1" and options["port"] == 8000
    assert db.exists()  # created and migrated by the parent before any worker
