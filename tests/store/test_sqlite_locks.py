"""Opening a second store on a file keeps the locks of the first one in the same process.

Closing any descriptor of a SQLite file drops every POSIX lock the process holds on it,
those of SQLite's own connections included. The store's check of a file's header (before
SQLite touches it) used ``open()`` and ``close()``: a second store opened in a process that
already had one (the driver of ``--engine processes`` and its tests, the service's readers)
silently dropped the first connection's shared lock. Another process closing its connection
then believed itself the last one, checkpointed, and deleted the WAL under the first
connection, whose next transaction found "database disk image is malformed".
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from weightstream.store.base import UnitOfWork
from weightstream.store.sqlite import SQLiteStore

_LAST_READER = (
    "import sqlite3, sys\n"
    "c = sqlite3.connect(sys.argv[1])\n"
    "c.execute('SELECT count(*) FROM sqlite_master').fetchone()\n"
    "c.close()\n"
)


def test_a_second_store_in_the_process_keeps_the_first_ones_lock(tmp_path: Path) -> None:
    db = tmp_path / "locks.db"
    wal = Path(f"{db}-wal")
    with SQLiteStore(db) as first:
        first.commit(UnitOfWork(position=("input-a", 1)))
        SQLiteStore(db, create=False).close()
        # Another process opens the file and closes it: this process still has it open, so
        # that process is not the last connection and leaves the WAL in place.
        subprocess.run([sys.executable, "-c", _LAST_READER, str(db)], check=True, timeout=60)
        assert wal.exists(), "another process deleted the WAL under an open connection"
        first.commit(UnitOfWork(position=("input-a", 2)))
        assert first.position("input-a") == 2
        assert first.integrity_check() == "ok"
