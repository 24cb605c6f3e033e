"""Opening a SQLite file as a weightstream store: the checks, the settings, the migrations.

:func:`check_file` refuses a foreign, missing or special file before SQLite can touch it;
:func:`configure` recognises a file of another application by its ``application_id``, then
requires WAL + ``synchronous=FULL``; :func:`migrate` applies the missing migrations
(:mod:`weightstream.store.schema`), each in its own transaction, safe against a second opener
racing this one. :func:`typed` maps a ``sqlite3`` error to the store's error tree.
"""

from __future__ import annotations

import sqlite3
from contextlib import suppress
from pathlib import Path

from weightstream.clock import Clock
from weightstream.errors import (
    ConflictError,
    StorageError,
    StorageFullError,
    StoreBusyError,
    StoreOpenError,
)
from weightstream.model import to_micros
from weightstream.store.schema import APPLICATION_ID, MIGRATIONS

__all__ = ["check_file", "configure", "migrate", "typed"]


def check_file(path: Path, *, create: bool) -> None:
    """Refuse a foreign, missing or special file before SQLite can touch it.

    A dangling symbolic link is refused (SQLite would create its target, somewhere the user
    did not name). So is anything that exists and is not a regular file: a character device
    such as ``/dev/null`` would get a ``-journal`` file beside it, and a fifo would block.
    """
    if not path.exists():
        if path.is_symlink():
            raise StoreOpenError(
                f"{path} is a symbolic link to a missing file; refusing to create its target"
            )
        if not create:
            raise StoreOpenError(f"no database at {path} (process a file first)")
        return
    if path.is_dir():
        raise StoreOpenError(f"{path} is a directory, not a database")
    if not path.is_file():
        raise StoreOpenError(
            f"{path} is not a regular file (a device, fifo or socket); "
            "refusing to use it as a database"
        )
    # The header is read by SQLite, never by an open() and close() of our own: closing any
    # descriptor of the file drops every POSIX lock this process holds on it, those of a
    # connection already open here included, and another process could then take itself for
    # the last connection and delete the WAL under it. SQLite keeps its own descriptors open
    # while this process has locks on the file (tests/store/test_sqlite_locks.py).
    try:
        probe = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5.0)
        try:
            probe.execute("PRAGMA schema_version").fetchone()
        finally:
            probe.close()
    except sqlite3.DatabaseError as exc:
        if "not a database" in str(exc).lower():
            raise StoreOpenError(
                f"{path} is not a SQLite database; refusing to overwrite it"
            ) from None
        # Anything else (a lock, a hot journal a reader cannot roll back) is the main
        # connection's to meet and report.


def typed(exc: sqlite3.Error) -> StorageError:
    """Map a sqlite3 error to our tree (never retry-and-assume-success)."""
    text = str(exc).lower()
    if "full" in text:
        return StorageFullError(f"storage full: {exc}")
    if "locked" in text or "busy" in text:
        return StoreBusyError(f"database is locked by another writer: {exc}")
    if isinstance(exc, sqlite3.IntegrityError) and "unique" in text:
        return ConflictError(f"constraint violated, another writer got there first: {exc}")
    if "malformed" in text or "not a database" in text:
        return StoreOpenError(f"database file is corrupt: {exc}")
    return StorageError(f"storage failure: {exc}")


def configure(
    c: sqlite3.Connection,
    path: Path,
    clock: Clock,
    busy_timeout_ms: int,
    allow_unsafe: bool,
    tuning: tuple[int, int],
) -> None:
    """Recognise a foreign file, then set WAL + synchronous=FULL (required) and the tuning."""
    c.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    # Recognise a foreign file before anything (journal_mode = WAL) writes to it.
    # One statement, one snapshot: read apart, a first opener racing this one could set the
    # id and create its tables in between, and a fresh file would look foreign.
    app_id, has_tables = c.execute(
        "SELECT (SELECT application_id FROM pragma_application_id), "
        "(SELECT count(*) FROM sqlite_master WHERE type = 'table')"
    ).fetchone()
    if app_id == 0 and has_tables == 0:
        c.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    elif app_id != APPLICATION_ID:
        raise StoreOpenError(
            f"{path} is a SQLite database of another application; refusing to use it"
        )
    cache_mb, checkpoint_pages = tuning
    c.execute(f"PRAGMA cache_size = {-1024 * cache_mb}")
    c.execute(f"PRAGMA wal_autocheckpoint = {checkpoint_pages}")
    # Two first openers switching a fresh file to WAL at once: SQLite fails one of them
    # at once with "database is locked" (waiting there could deadlock), so wait here,
    # within the busy timeout, then report busy (exit 75), never an unusable database.
    deadline = clock.monotonic() + busy_timeout_ms / 1000
    while True:
        try:
            mode = c.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            break
        except sqlite3.OperationalError as exc:
            error = typed(exc)
            if not isinstance(error, StoreBusyError):
                raise
            if clock.monotonic() >= deadline:
                c.close()
                raise error from None
            clock.sleep(0.01)
    c.execute("PRAGMA synchronous = FULL")
    sync = c.execute("PRAGMA synchronous").fetchone()[0]
    c.execute("PRAGMA foreign_keys = ON")
    if (str(mode).lower() != "wal" or int(sync) != 2) and not allow_unsafe:
        raise StoreOpenError(
            f"durability settings not in force (journal_mode={mode}, synchronous={sync}); "
            "WAL + synchronous=FULL are required"
        )


def migrate(
    c: sqlite3.Connection,
    clock: Clock,
    migrations: tuple[tuple[int, str, tuple[str, ...]], ...] = MIGRATIONS,
) -> None:
    """Apply each missing migration in its own transaction, read under the write lock.

    ``BEGIN IMMEDIATE`` comes *before* the migration table is read: two processes opening
    one fresh database would otherwise both see no migrations and the second would fail
    on "table already exists". Under the lock the table is read again, so a waiting opener
    finds the work done. A lock not obtained within ``busy_timeout`` is
    :class:`StoreBusyError` (exit 75, retry), never an "unusable database". A database with
    every migration applied is recognised without taking the lock (readers never wait).
    """

    def applied() -> set[int]:
        if not c.execute(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
        ).fetchone()[0]:
            return set()
        return {v for (v,) in c.execute("SELECT version FROM schema_migrations")}

    if not [m for m in migrations if m[0] not in applied()]:
        return
    while True:
        try:
            c.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            error = typed(exc)
            if isinstance(error, StoreBusyError):
                c.close()
                raise error from None
            raise
        try:
            c.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                "description TEXT NOT NULL, applied_at INTEGER NOT NULL)"
            )
            missing = [m for m in migrations if m[0] not in applied()]
            if missing:
                version, description, statements = missing[0]
                for statement in statements:
                    c.execute(statement)
                c.execute(
                    "INSERT INTO schema_migrations VALUES (?, ?, ?)",
                    (version, description, to_micros(clock.now())),
                )
            c.execute("COMMIT")
        except BaseException:
            with suppress(sqlite3.Error):
                c.execute("ROLLBACK")
            raise
        if len(missing) <= 1:
            return
