"""The memory settings a file run gets by default (issue 11: at most 300 MB at 10 M rows).

The figures behind each default are in :mod:`weightstream.config`; these tests hold the
defaults to what reaches the store, so a change of either is seen.
"""

from __future__ import annotations

from pathlib import Path

from weightstream.config import Config
from weightstream.store.sqlite import SQLiteStore


def test_the_default_store_caches_at_most_16_mb_of_pages(tmp_path: Path) -> None:
    """A store opened from the default configuration asks SQLite for a page cache of 16 MB
    (32 MB cost 16 MB of a file run's peak and no time once users come in order)."""
    store = SQLiteStore.from_config(Config().store, tmp_path / "ws.db")
    try:
        ((cache_size,),) = store._conn.execute("PRAGMA cache_size").fetchall()
    finally:
        store.close()
    assert cache_size == -16 * 1024  # negative: KiB, not pages
