"""A throwaway local PostgreSQL server, for the tests, the benchmarks and trying the store out.

:class:`TempPostgres` creates a cluster with ``initdb`` in a temporary directory, starts it
with ``pg_ctl`` listening only on a unix socket inside that directory (no TCP port, so two of
them never collide), and removes it all on :meth:`TempPostgres.cleanup`. The binaries are
Debian's (``/usr/lib/postgresql/VERSION/bin``, newest first) or whatever ``initdb`` is on
``PATH``. ``initdb`` refuses to run as root: as root, the server runs as the ``postgres``
system user (which Debian's package creates) through ``runuser``, with the directory owned
by it. The server keeps PostgreSQL's durable defaults (``fsync``, ``synchronous_commit``,
``full_page_writes`` on), which :class:`~weightstream.store.postgres.PostgresStore` requires.

This module is not used by the store itself; ``scripts/install-postgresql`` installs the
package it needs.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from contextlib import suppress
from pathlib import Path
from urllib.parse import quote

__all__ = ["TempPostgres", "postgres_bin"]

_SERVER_USER = "postgres"


def postgres_bin() -> Path:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres``."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if found:
        return found[-1].parent
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    raise FileNotFoundError(
        "no PostgreSQL server binaries (initdb): run scripts/install-postgresql"
    )


class TempPostgres:
    """A PostgreSQL cluster in a temporary directory, on a unix socket in that directory."""

    def __init__(self, *, port: int = 5432, prefix: str = "ws-pg-") -> None:
        self.bin = postgres_bin()
        self.port = port
        self.root = Path(tempfile.mkdtemp(prefix=prefix))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            entry = pwd.getpwnam(_SERVER_USER)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
            self._as_user = ["runuser", "-u", _SERVER_USER, "--"]
            self.user = _SERVER_USER
        else:
            self.user = pwd.getpwuid(os.geteuid()).pw_name
        os.chmod(self.root, 0o755)
        self._run(
            "initdb", "-D", str(self.data), "-U", self.user, "--auth=trust", "-E", "UTF8",
            "--locale=C", "--no-instructions",
        )  # fmt: skip

    def _run(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        command = [*self._as_user, str(self.bin / tool), *args]
        done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(
                f"{tool} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}"
                f"\n{self.log_tail()}"
            )
        return done

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = f"-c listen_addresses='' -k {self.root} -p {self.port} -c max_connections=200"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: ``fast`` (clean), or ``immediate`` (a crash: no checkpoint)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def running(self) -> bool:
        command = [*self._as_user, str(self.bin / "pg_ctl"), "-D", str(self.data), "status"]
        return subprocess.run(command, capture_output=True, check=False).returncode == 0

    def dsn(self, dbname: str = "postgres", schema: str | None = None) -> str:
        """A ``postgresql://`` URL of ``dbname`` (and ``schema`` first on the search path)."""
        url = (
            f"postgresql://{quote(self.user)}@/{quote(dbname)}"
            f"?host={quote(str(self.root))}&port={self.port}"
        )
        if schema is not None:
            url += "&options=" + quote(f"-csearch_path={schema}")
        return url

    def execute(self, sql: str, dbname: str = "postgres") -> None:
        """Run one statement in autocommit (CREATE DATABASE, CREATE SCHEMA, DROP ...)."""
        import psycopg

        with psycopg.connect(self.dsn(dbname), autocommit=True) as conn:
            conn.execute(sql.encode())

    def cleanup(self) -> None:
        """Stop the server if it runs, and remove the directory."""
        if self.data.exists() and self.running():
            with suppress(RuntimeError):
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> TempPostgres:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
