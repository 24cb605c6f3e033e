"""Opening a SQLite store on a careless path: devices, dangling links, two first openers.

Issue 10, "Failures that must be typed": every case here failed on main before the fix.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from weightstream.errors import StoreOpenError
from weightstream.store.schema import MIGRATIONS
from weightstream.store.sqlite import SQLiteStore


def _char_device(path: Path) -> Path:
    """A character device node like /dev/null (major 1, minor 3), made inside ``path``'s dir."""
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except (PermissionError, OSError) as exc:
        pytest.skip(f"cannot create a device node here: {exc}")
    return path


def test_a_character_device_is_refused_and_nothing_is_created_beside_it(tmp_path: Path) -> None:
    """Case: a database path that is a character device left a `-journal` file beside it.

    Now it is refused before SQLite touches it (StoreOpenError, exit 74), and the directory
    holds nothing but the device.
    """
    device = _char_device(tmp_path / "null")
    with pytest.raises(StoreOpenError, match="not a regular file"):
        SQLiteStore(device)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["null"]
    assert stat.S_ISCHR(device.stat().st_mode)


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    """Case: a database path that is a fifo is refused at once (reading it would block)."""
    fifo = tmp_path / "pipe.db"
    os.mkfifo(fifo)
    outcome: list[BaseException | None] = []

    def open_it() -> None:
        try:
            SQLiteStore(fifo, create=False).close()
            outcome.append(None)
        except BaseException as exc:  # reported below
            outcome.append(exc)

    opener = threading.Thread(target=open_it, daemon=True)
    opener.start()
    opener.join(timeout=10)
    if opener.is_alive():  # the old behaviour: blocked reading the fifo; unblock it and fail
        with open(fifo, "wb"):
            pass
        pytest.fail("opening a fifo as the database blocked")
    assert isinstance(outcome[0], StoreOpenError), outcome
    assert "not a regular file" in str(outcome[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe.db"]


def test_a_dangling_symlink_is_refused_and_its_target_not_created(tmp_path: Path) -> None:
    """Case: a dangling database symlink created its target. Now: StoreOpenError (exit 74)."""
    link = tmp_path / "ws.db"
    target = tmp_path / "elsewhere" / "real.db"
    target.parent.mkdir()
    link.symlink_to(target)
    with pytest.raises(StoreOpenError, match="symbolic link"):
        SQLiteStore(link, create=True)
    assert not target.exists()
    assert sorted(p.name for p in target.parent.iterdir()) == []
    assert link.is_symlink()


def test_a_symlink_to_a_real_database_still_works(tmp_path: Path) -> None:
    """A symlink to an existing store is used as the store (only dangling links are refused)."""
    real = tmp_path / "real.db"
    SQLiteStore(real).close()
    link = tmp_path / "ws.db"
    link.symlink_to(real)
    store = SQLiteStore(link, create=False)
    assert store.integrity_check() == "ok"
    store.close()


# -- two processes opening one fresh database at once -------------------------------------------

_OPENER = textwrap.dedent(
    """
    import os, sys, time
    from weightstream.errors import WeightstreamError, exit_code_for
    from weightstream.store.sqlite import SQLiteStore
    db, go, ready = sys.argv[1], sys.argv[2], sys.argv[3]
    open(ready, "w").close()
    while not os.path.exists(go):      # every opener is imported and waiting: start together
        time.sleep(0.0005)
    try:
        SQLiteStore(db).close()
    except WeightstreamError as exc:
        print(exc, file=sys.stderr)
        sys.exit(exit_code_for(exc))
    """
)

ROUNDS = 12
OPENERS = 3


def test_first_openers_racing_on_the_migration_all_succeed(tmp_path: Path) -> None:
    """Case: two runs at once on a fresh database raced on the migration (second exited 74,
    "table user_states already exists"). Now the migration table is read under the write lock,
    so every opener waits and then finds the schema complete: all exit 0, each migration is
    recorded once.

    Real processes, released together by a file barrier, ROUNDS times: on main before the fix
    1 to 10 of the 36 openers failed in each run. It also covers the rarer face of the same
    race, two openers switching the fresh file to WAL at once ("database is locked", exit 74).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEIGHTSTREAM_")}
    failures = []
    for round_ in range(ROUNDS):
        db, go = tmp_path / f"r{round_}.db", tmp_path / f"go{round_}"
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    _OPENER,
                    str(db),
                    str(go),
                    str(tmp_path / f"ready{round_}-{i}"),
                ],
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
            for i in range(OPENERS)
        ]
        deadline = time.monotonic() + 60
        while len(list(tmp_path.glob(f"ready{round_}-*"))) < OPENERS:  # all at the barrier
            assert time.monotonic() < deadline, "openers did not start"
            time.sleep(0.01)
        go.touch()
        for proc in procs:
            _, stderr = proc.communicate(timeout=60)
            if proc.returncode != 0:
                failures.append((round_, proc.returncode, stderr.strip()))
        conn = sqlite3.connect(db)
        versions = [v for (v,) in conn.execute("SELECT version FROM schema_migrations")]
        conn.close()
        assert sorted(versions) == [m[0] for m in MIGRATIONS], (round_, versions)
    assert not failures, (
        len(failures),
        sorted({(f[1], f[2].rsplit(": ", 1)[-1]) for f in failures}),
    )


def test_an_opener_kept_from_the_migration_lock_is_busy_not_unusable(tmp_path: Path) -> None:
    """Case: the migration race's typed outcome. A fresh database whose write lock another
    process holds past the busy timeout gives StoreBusyError (exit 75, retry), not
    StoreOpenError (exit 74, "unusable database"); nothing is half-created.
    """
    from weightstream.errors import StoreBusyError
    from weightstream.store.schema import APPLICATION_ID

    path = tmp_path / "ws.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    holder.execute("PRAGMA journal_mode = WAL")
    holder.execute("BEGIN IMMEDIATE")  # a first opener in the middle of its migration
    try:
        with pytest.raises(StoreBusyError):
            SQLiteStore(path, busy_timeout_ms=200)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    store = SQLiteStore(path)  # once the lock is free, the schema is created as usual
    assert {v for (v,) in store.connection.execute("SELECT version FROM schema_migrations")} == {
        m[0] for m in MIGRATIONS
    }
    store.close()


def test_a_migrated_database_opens_while_a_writer_holds_the_lock(tmp_path: Path) -> None:
    """Reading commands never wait for the migration lock once every migration is applied."""
    path = tmp_path / "ws.db"
    SQLiteStore(path).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        store = SQLiteStore(path, busy_timeout_ms=2000, create=False)
        assert time.monotonic() - started < 1.5
        assert store.load_state("nobody") is None
        store.close()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
