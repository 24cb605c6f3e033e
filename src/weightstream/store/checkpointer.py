"""Checkpoints of a SQLite file's write-ahead log on a thread of their own, off the commit path.

In WAL mode a commit appends its pages to the log; a checkpoint copies them back into the
database file. SQLite's automatic checkpoint runs inside the commit that takes the log past
``wal_autocheckpoint`` pages, on the committing thread: every 10,000 pages (40 MB), one commit
also copies 40 MB and fsyncs the database. In the service that commit is a group of requests,
all of which wait for it: singles at 2,000/s on loopback showed a maximum latency of 87-211 ms
with it and 52-57 ms with the log left alone (3 Dec, two rounds each). In a file run it is
CPU time taken from deciding readings on the one thread that decides them.

:class:`Checkpointer` takes that work off the writer: the writer's connection sets
``wal_autocheckpoint = 0`` and this thread, on a connection of its own, runs a PASSIVE
checkpoint every ``interval_s``: it copies what is committed into the database and never
blocks a writer or a reader. Passive checkpoints alone would let the log grow without end
under a steady stream of commits, since SQLite starts the log over only when a writer finds
every frame of it copied, and new commits keep coming while the thread copies. So once the
log holds ``restart_pages``, the thread marks a restart due, and the writer, right after its
next commit (:meth:`Checkpointer.after_commit`), runs one more passive checkpoint itself on
its own connection: nothing can commit in between, so that one copies the few frames the
thread has not, and the writer's next transaction starts the log from its beginning. The
writer's part is a small copy and one fsync of the database file, once per
``restart_pages`` of log, in place of the whole copy. (A RESTART checkpoint from the thread
was tried first: it waits for the write lock, which a busy writer hardly ever leaves free.)

Durability is unchanged: a commit is durable once its log pages are synced (WAL +
``synchronous = FULL``), whoever copies them later; a process killed during a checkpoint
leaves a database SQLite recovers on the next open (the crash matrix runs with this on).

SQLite offers no such thread itself and Python's ``sqlite3`` has no WAL hook, so this is a
loop around ``PRAGMA wal_checkpoint(PASSIVE)``.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from contextlib import suppress
from pathlib import Path

from weightstream.observe import Observer

__all__ = ["Checkpointer"]

_log = logging.getLogger(__name__)


class Checkpointer:
    """A thread that checkpoints the WAL of the SQLite file at ``path`` until :meth:`close`;
    ``observer`` hears of each round (:meth:`Observer.wal_checkpointed`: metrics)."""

    def __init__(
        self,
        path: str | Path,
        *,
        restart_pages: int,
        interval_s: float = 0.25,
        observer: Observer | None = None,
    ) -> None:
        if restart_pages < 1 or interval_s <= 0:
            raise ValueError("restart_pages must be >= 1 and interval_s > 0")
        self.restart_pages = restart_pages
        self.interval_s = interval_s
        self._observer = observer or Observer()
        #: Checkpoints run by the thread, and log restarts made ready by the writer.
        self.passive = 0
        self.restarts = 0
        #: Set by the thread when the log holds restart_pages; cleared by after_commit.
        self.restart_due = False
        self._conn = sqlite3.connect(
            Path(path), isolation_level=None, check_same_thread=False, timeout=0
        )
        self._conn.execute("PRAGMA busy_timeout = 0")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ws-checkpoint", daemon=True)
        self._thread.start()

    def checkpoint(self) -> tuple[int, int]:
        """One round of the thread: a passive checkpoint. Returns the log's pages and how many
        of them are in the database now."""
        _busy, log, copied = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        self.passive += 1
        if log >= self.restart_pages:
            self.restart_due = True
        return int(log), int(copied)

    def after_commit(self, writer: sqlite3.Connection) -> None:
        """Called by the writer after each commit, on its own connection: when a restart is
        due, copy the rest of the log, so that the next transaction starts it over."""
        if not self.restart_due:
            return
        self.restart_due = False
        _busy, log, copied = writer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if log == copied:
            self.restarts += 1

    def _run(self) -> None:
        failing = False  # a failure is logged once a streak (a full disk fails every round)
        while not self._stop.wait(self.interval_s):
            try:
                log, _copied = self.checkpoint()
            except sqlite3.Error as exc:  # the next round tries again; commits go on
                self._observer.wal_checkpointed(None)
                if not failing:
                    _log.warning("WAL checkpoints failing: %s", type(exc).__name__)
                failing = True
                continue
            self._observer.wal_checkpointed(log)
            if failing:
                _log.warning("WAL checkpoints work again")
            failing = False

    def close(self) -> None:
        """Stop the thread (after the checkpoint it is running, if any) and close its
        connection. Idempotent."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()
        with suppress(sqlite3.Error):
            self._conn.close()
